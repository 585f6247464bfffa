// Gallery multi-select: "select all on this page", a live count, and a confirmation dialog
// before a bulk delete. Without scripts the server asks for the confirmation on a page instead.
"use strict";

function setupBulk(form) {
  const boxes = Array.from(document.querySelectorAll('input[name="ids"][form="bulk"]'));
  const all = document.getElementById("select-all");
  const count = document.getElementById("bulk-count");
  const confirmed = form.querySelector('input[name="confirmed"]');
  const dialog = document.getElementById("bulk-confirm");
  const dialogText = document.getElementById("bulk-confirm-text");
  const needSelection = form.querySelectorAll("[data-needs-selection]");
  let pending = null;

  const chosen = () => boxes.filter((box) => box.checked).length;

  function refresh() {
    const n = chosen();
    all.checked = n > 0 && n === boxes.length;
    all.indeterminate = n > 0 && n < boxes.length;
    count.textContent = n ? count.dataset.template.replace("{count}", n) : "";
    for (const button of needSelection) button.disabled = n === 0;
  }

  all.closest("[hidden]").hidden = false;
  all.addEventListener("change", () => {
    for (const box of boxes) box.checked = all.checked;
    refresh();
  });
  for (const box of boxes) box.addEventListener("change", refresh);

  form.addEventListener("submit", (event) => {
    const button = event.submitter;
    if (!button || !("confirmBulk" in button.dataset) || confirmed.value === "yes") return;
    event.preventDefault();
    const question = dialogText.dataset.template.replace("{count}", chosen());
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(question)) { confirmed.value = "yes"; form.requestSubmit(button); }
      return;
    }
    dialogText.textContent = question;
    pending = button;
    dialog.returnValue = "";
    dialog.showModal();
  });

  if (dialog) {
    dialog.addEventListener("close", () => {
      const button = pending;
      pending = null;
      if (dialog.returnValue !== "confirm" || !button) { button && button.focus(); return; }
      confirmed.value = "yes";
      form.requestSubmit(button);
    });
  }
  // back from the next page (bfcache): a stale "yes" must not skip the next confirmation
  window.addEventListener("pageshow", () => { confirmed.value = ""; refresh(); });
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("bulk");
  if (form) setupBulk(form);
});
