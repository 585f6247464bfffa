// Caverna studio: live validation on the generate page, progress on the image page,
// copy buttons and delete confirmations. No framework; every call carries the CSRF token.
"use strict";

const csrf = () => document.body.dataset.csrf || "";

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function setupGenerate(form) {
  const text = JSON.parse(document.getElementById("generate-text").textContent);
  const problemsBox = document.getElementById("problems");
  const promptBox = document.getElementById("prompt");
  const negativeBox = document.getElementById("negative");
  const dialect = document.getElementById("dialect");
  const submit = document.getElementById("submit");

  function params() {
    const data = new FormData(form);
    return {
      pose: data.get("pose"), outfit: data.get("outfit"), footwear: data.get("footwear"),
      props: data.getAll("props"), frame: data.get("frame"), aspect_ratio: data.get("aspect_ratio"),
      seed: data.get("seed"), dialect: dialect.value,
    };
  }

  function describe(select) {
    const help = document.getElementById(select.id + "-help");
    const option = select.selectedOptions[0];
    if (help) help.textContent = (option && option.dataset.description) || "";
  }

  function listUnavailable(select, reasons) {
    // the reasons of ruled-out options, in the page: a disabled option's title is out of reach
    const box = document.getElementById(select.id + "-unavailable");
    if (!box) return;
    const items = [];
    for (const option of select.options) {
      const reason = reasons[option.value];
      if (!option.value || !reason || option.selected) continue;
      const item = document.createElement("li");
      const name = document.createElement("strong");
      name.textContent = option.dataset.label || option.textContent;
      item.append(name, ": " + reason);
      items.push(item);
    }
    const summary = box.querySelector("summary");
    summary.textContent = summary.dataset.template.replace("{count}", items.length);
    box.querySelector("ul").replaceChildren(...items);
    box.hidden = items.length === 0;
  }

  function showDisabled(disabled) {
    for (const select of form.querySelectorAll("select[data-kind]")) {
      const reasons = disabled[select.dataset.kind] || {};
      listUnavailable(select, reasons);
      for (const option of select.options) {
        if (!option.value) continue;
        const reason = reasons[option.value];
        option.disabled = Boolean(reason) && !option.selected;
        option.title = reason || "";
        const base = option.dataset.label || option.textContent;
        option.dataset.label = base;
        option.textContent = reason && !option.selected ? `${base} (${text.unavailable})` : base;
      }
    }
    for (const label of form.querySelectorAll("label[data-kind='prop']")) {
      const reason = (disabled.prop || {})[label.dataset.option];
      const box = label.querySelector("input");
      box.disabled = Boolean(reason) && !box.checked;
      label.classList.toggle("disabled", box.disabled);
      label.querySelector(".reason").textContent = box.disabled ? reason : "";
    }
  }

  function showProblems(problems) {
    problemsBox.replaceChildren();
    const head = document.createElement("p");
    if (!problems.length) {
      head.textContent = text.valid;
      head.className = "ok";
      problemsBox.append(head);
      return;
    }
    head.textContent = text.problems;
    head.className = "error";
    const list = document.createElement("ul");
    for (const problem of problems) {
      const item = document.createElement("li");
      const field = document.createElement("strong");
      field.textContent = problem.field_label || problem.field;
      item.append(field, ": " + problem.message);
      list.append(item);
    }
    problemsBox.append(head, list);
  }

  const check = debounce(async () => {
    const answer = await fetch("/web/check", {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(params()),
    });
    // signed out meanwhile (the session ended): reloading leads to the sign-in page and back
    if (answer.status === 401) { window.location.reload(); return; }
    if (!answer.ok) return;
    const result = await answer.json();
    showProblems(result.problems);
    showDisabled(result.disabled);
    promptBox.textContent = result.compiled ? result.compiled.prompt : "";
    negativeBox.textContent = result.compiled ? (result.compiled.negative_prompt || "") : "";
    submit.disabled = result.problems.length > 0;
  }, 150);

  form.addEventListener("change", (event) => {
    if (event.target.tagName === "SELECT") describe(event.target);
    check();
  });
  form.addEventListener("input", (event) => { if (event.target.id === "seed") check(); });
  dialect.addEventListener("change", check);
  for (const select of form.querySelectorAll("select")) describe(select);
  check();
}

function setupProgress(detail) {
  const status = detail.dataset.status;
  if (status !== "queued" && status !== "processing") return;
  const bar = document.getElementById("progress");
  const eta = document.getElementById("eta");
  const poll = async () => {
    const answer = await fetch(`/web/images/${detail.dataset.image}/status`);
    if (!answer.ok) return;
    const state = await answer.json();
    if (bar) { bar.value = state.progress; bar.textContent = `${Math.round(state.progress * 100)}%`; }
    if (eta) eta.textContent = state.eta_seconds != null ? `~${Math.ceil(state.eta_seconds)} s` : "";
    if (state.status !== "queued" && state.status !== "processing") {
      window.location.reload();
      return;
    }
    setTimeout(poll, 500);
  };
  setTimeout(poll, 300);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("generate");
  if (form) setupGenerate(form);
  const detail = document.getElementById("detail");
  if (detail) setupProgress(detail);
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.querySelector(button.dataset.copy);
      field.select();
      try { await navigator.clipboard.writeText(field.value); } catch (_) { document.execCommand("copy"); }
      button.textContent = button.dataset.copied;
    });
  }
  for (const confirmForm of document.querySelectorAll("form[data-confirm]")) {
    confirmForm.addEventListener("submit", (event) => {
      if (!window.confirm(confirmForm.dataset.confirm)) event.preventDefault();
    });
  }
});
