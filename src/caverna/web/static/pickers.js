// Generate page: under each picker, a small preview of the chosen option, swapped on change.
// The images come from /web/thumbs, versioned by the pack so the browser may keep them.
"use strict";

function thumbUrl(kind, option, version) {
  return `/web/thumbs/${encodeURIComponent(kind)}/${encodeURIComponent(option)}.webp?v=${encodeURIComponent(version)}`;
}

function setupPicker(select, holder) {
  const size = Number(holder.dataset.size) || 120;
  const show = () => {
    const option = select.selectedOptions[0];
    let image = holder.querySelector("img");
    if (!option || !option.value) {
      if (image) image.remove();
      return;
    }
    if (!image) {
      image = document.createElement("img");
      image.width = size;
      image.height = size;
      image.decoding = "async";
      holder.append(image);
    }
    // app.js may append "(unavailable)" to the text of an option; its clean label is kept apart
    image.alt = option.dataset.label || option.textContent.trim();
    image.src = thumbUrl(holder.dataset.kind, option.value, holder.dataset.version);
  };
  select.addEventListener("change", show);
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const holder of document.querySelectorAll(".picker-thumb[data-kind]")) {
    const select = document.getElementById(holder.id.replace(/-thumb$/, ""));
    if (select) setupPicker(select, holder);
  }
});
