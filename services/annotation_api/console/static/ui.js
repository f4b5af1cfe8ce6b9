// Tiny DOM helpers shared by the screens.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === "class") el.className = value;
    else if (key === "html") el.innerHTML = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function mount(target, ...children) {
  target.replaceChildren();
  append(target, children);
}

export function toast(message, kind = "info") {
  const el = h("div", { class: `toast toast-${kind}` }, message);
  const box = document.getElementById("toasts");
  box.append(el);
  while (box.children.length > 2) box.firstElementChild.remove();
  setTimeout(() => el.remove(), kind === "error" ? 7000 : 2500);
}

// A modal confirmation; resolves true when confirmed.
export function confirmDialog(title, text, { danger = true, confirm = "Delete" } = {}) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "dialog", "aria-label": title },
      h("h2", {}, title), h("p", {}, text),
      h("form", { method: "dialog", class: "row end" },
        h("button", { value: "cancel", class: "btn" }, "Cancel"),
        h("button", { value: "ok", class: danger ? "btn btn-danger" : "btn btn-primary" }, confirm)));
    dialog.addEventListener("close", () => { resolve(dialog.returnValue === "ok"); dialog.remove(); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", { class: "hint" }, hint) : null);
}

export function checkbox(label, checked, attrs = {}) {
  const input = h("input", { type: "checkbox", ...attrs });
  input.checked = !!checked;
  return [h("label", { class: "check" }, input, h("span", {}, label)), input];
}

export function fmtNumber(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function badge(text, kind = "neutral") {
  return h("span", { class: `badge badge-${kind}` }, text);
}

export function stateKind(state) {
  return { CO: "ok", CONNECTED: "ok", ER: "error", ERROR: "error", TR: "busy", TRAINING: "busy", PR: "busy", PREDICTING: "busy" }[state] || "neutral";
}

export function spinner() {
  return h("span", { class: "spinner", "aria-hidden": "true" });
}

export function emptyState(title, text, action) {
  return h("div", { class: "empty" }, h("h2", {}, title), h("p", {}, text), action || null);
}
