// Storyboard page: while any frame of a run is queued or being made, poll the run's status
// every 500 ms and update each frame in place (progress, status, thumbnail) without a reload.
"use strict";

(() => {
  const POLL_MS = 500;
  const ACTIVE = new Set(["queued", "processing"]);

  function text() {
    const node = document.getElementById("storyboard-text");
    return node ? JSON.parse(node.textContent) : { statuses: {}, summary: "{done}/{total}" };
  }

  function showThumbnail(item, frame) {
    const box = item.querySelector(".sb-thumb");
    if (!box || !frame.thumbnail_url || box.querySelector("img")) return;
    const img = document.createElement("img");
    img.src = frame.thumbnail_url;
    img.alt = item.dataset.alt || "";
    img.width = frame.width;
    img.height = frame.height;
    box.style.aspectRatio = `${frame.width} / ${frame.height}`;
    box.replaceChildren(img);
  }

  function updateFrame(item, frame, words) {
    if ((item.dataset.image || "") !== (frame.image_id || "")) return false;
    item.dataset.status = frame.status || "";
    const badge = item.querySelector("[data-status-text]");
    if (badge && frame.status) {
      badge.textContent = words.statuses[frame.status] || frame.status;
      badge.className = `badge status-${frame.status}`;
    }
    const bar = item.querySelector("progress");
    if (bar) {
      bar.value = frame.progress;
      bar.textContent = `${Math.round(frame.progress * 100)}%`;
      bar.hidden = !ACTIVE.has(frame.status);
    }
    const error = item.querySelector("[data-error]");
    if (error) {
      error.textContent = frame.error || "";
      error.hidden = !frame.error;
    }
    if (frame.status === "completed") showThumbnail(item, frame);
    return true;
  }

  function follow(strip) {
    const words = text();
    const summary = strip.querySelector("[data-summary]");
    const exports = strip.querySelector("[data-exports]");
    const items = new Map();
    for (const item of strip.querySelectorAll(".sb-frame")) items.set(item.dataset.index, item);

    const poll = async () => {
      let state;
      try {
        const answer = await fetch(`/web/sequences/${strip.dataset.sequence}/status`, {
          headers: { accept: "application/json" },
          cache: "no-store",
        });
        if (!answer.ok) return; // signed out or gone: the page stays as it was
        state = await answer.json();
      } catch (_) {
        setTimeout(poll, POLL_MS * 4); // offline for a moment: try again, more slowly
        return;
      }
      let stale = false;
      for (const frame of state.frames) {
        const item = items.get(String(frame.index));
        if (item && !updateFrame(item, frame, words)) stale = true;
      }
      if (stale) {
        // a frame was made again elsewhere: its image changed, so redraw the whole strip
        window.location.reload();
        return;
      }
      const line = words.summary.replace("{done}", state.done).replace("{total}", state.total);
      if (summary && summary.textContent !== line) summary.textContent = line;
      if (exports) exports.hidden = state.done === 0;
      strip.dataset.active = state.active ? "true" : "false";
      if (state.active) setTimeout(poll, POLL_MS);
    };
    setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const strip of document.querySelectorAll(".sb-strip[data-sequence][data-active='true']")) {
      follow(strip);
    }
    const problems = document.getElementById("sb-problems");
    if (problems) problems.focus();
  });
})();
