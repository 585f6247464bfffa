// Consistency panels that are still pending (the report is made shortly after an image is done)
// ask for themselves again every 1.5 s, a bounded number of times, and replace themselves once
// the report is there. Without the script the "Refresh" link does the same.
"use strict";

(() => {
  const POLL_MS = 1500;
  const MAX_POLLS = 120; // three minutes: after that the link is the way

  function follow(panel, polls) {
    if (polls >= MAX_POLLS) return;
    setTimeout(async () => {
      let html;
      try {
        const answer = await fetch(panel.dataset.poll, { cache: "no-store", headers: { accept: "text/html" } });
        if (!answer.ok) return; // signed out or gone: the panel stays as it was
        html = await answer.text();
      } catch (_) {
        follow(panel, polls + 1);
        return;
      }
      const holder = document.createElement("template");
      holder.innerHTML = html.trim();
      const fresh = holder.content.firstElementChild;
      if (!fresh || fresh.id !== panel.id) return;
      // an unchanged panel stays in place: nothing moves and focus is kept
      if (fresh.outerHTML === panel.outerHTML) {
        follow(panel, polls + 1);
        return;
      }
      panel.replaceWith(fresh);
      if (fresh.dataset.pending === "true") follow(fresh, polls + 1);
    }, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const panel of document.querySelectorAll("[data-poll][data-pending='true']")) follow(panel, 0);
  });
})();
