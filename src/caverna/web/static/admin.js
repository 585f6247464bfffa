// Admin pages: follow running bulk operations. The page works without it (reload to refresh);
// with it, each unfinished operation is asked about once a second until it ends.
"use strict";

function setupBulk() {
  const rows = document.querySelectorAll("tr.bulk-op");
  if (!rows.length) return;
  const textNode = document.getElementById("bulk-text");
  const words = textNode ? JSON.parse(textNode.textContent) : {};
  const finished = (status) => status === "completed" || status === "failed";

  function show(row, state) {
    const field = (name) => row.querySelector(`[data-field="${name}"]`);
    const percent = Math.round(state.progress * 100);
    const bar = field("progress");
    if (bar) { bar.value = state.progress; bar.textContent = `${percent}%`; }
    const label = field("percent");
    if (label) label.textContent = `${percent}%`;
    for (const name of ["done", "failed", "total"]) {
      const cell = field(name);
      if (cell) cell.textContent = String(state[name]);
    }
    const badge = field("status");
    if (badge && badge.dataset.status !== state.status) {
      badge.dataset.status = state.status;
      badge.className = `badge bulk-${state.status}`;
      badge.textContent = words[state.status] || state.status;
    }
    row.dataset.status = state.status;
  }

  function follow(row) {
    const poll = async () => {
      let answer;
      try {
        answer = await fetch(`/web/admin/bulk/${row.dataset.operation}`, {
          headers: { accept: "application/json" },
        });
      } catch (_) {
        setTimeout(poll, 3000);  // offline for a moment: try again, more slowly
        return;
      }
      if (!answer.ok) return;  // signed out or gone: stop asking
      const state = await answer.json();
      show(row, state);
      if (!finished(state.status)) setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }

  for (const row of rows) {
    if (!finished(row.dataset.status)) follow(row);
  }
}

document.addEventListener("DOMContentLoaded", setupBulk);
