// The console shell: hash routes (so a reload lands on the same screen), sign-in guard, breadcrumbs.
import { api, token } from "./api.js";
import { h, mount, fmtNumber } from "./ui.js";

const routes = [
  [/^#\/signin$/, "signin", () => ({})],
  [/^#\/projects\/new$/, "project-form", () => ({})],
  [/^#\/projects$/, "projects", () => ({})],
  [/^#\/p\/(\d+)\/settings$/, "project-form", (m) => ({ project: +m[1] })],
  [/^#\/p\/(\d+)\/import$/, "import", (m) => ({ project: +m[1] })],
  [/^#\/p\/(\d+)\/ml$/, "ml", (m) => ({ project: +m[1] })],
  [/^#\/p\/(\d+)\/model\/(\d+)$/, "model", (m) => ({ project: +m[1], backend: +m[2] })],
  [/^#\/p\/(\d+)\/label$/, "label", (m) => ({ project: +m[1] })],
  [/^#\/p\/(\d+)\/task\/(\d+)$/, "label", (m) => ({ project: +m[1], task: +m[2] })],
  [/^#\/p\/(\d+)(?:\/data)?$/, "data", (m) => ({ project: +m[1] })],
];

let cleanup = null;
let me = null;

export function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

export function query() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

export function setQuery(params) {
  const base = location.hash.split("?")[0];
  const q = new URLSearchParams(params).toString();
  history.replaceState(null, "", q ? `${base}?${q}` : base);
}

// Project sub-navigation shared by every project screen.
export function projectNav(project, active) {
  const tab = (key, label, hash) =>
    h("a", { href: hash, class: active === key ? "tab active" : "tab", "aria-current": active === key ? "page" : null }, label);
  return h("div", { class: "project-head" },
    h("div", { class: "project-title" },
      h("h1", {}, project.title || `Project ${project.id}`),
      h("span", { class: "muted" }, `${fmtNumber(project.task_number ?? 0)} tasks · ${fmtNumber(project.total_annotations_number ?? 0)} annotations · ${fmtNumber(project.total_predictions_number ?? 0)} predictions`)),
    h("nav", { class: "tabs", "aria-label": "Project" },
      tab("data", "Data manager", `#/p/${project.id}`),
      tab("label", "Label", `#/p/${project.id}/label`),
      tab("import", "Import", `#/p/${project.id}/import`),
      tab("ml", "Machine learning", `#/p/${project.id}/ml`),
      tab("settings", "Settings", `#/p/${project.id}/settings`)));
}

export function crumbs(...items) {
  mount(document.getElementById("crumbs"),
    items.map((item, i) => [i ? h("span", { class: "sep", "aria-hidden": "true" }, "/") : null,
      item.href ? h("a", { href: item.href }, item.label) : h("span", {}, item.label)]));
}

function renderAccount() {
  const box = document.getElementById("account");
  if (!me) return mount(box);
  mount(box, h("span", { class: "muted who" }, me.email),
    h("button", { class: "btn btn-ghost", type: "button", onclick: signOut }, "Sign out"));
}

export function signOut() {
  token.clear();
  me = null;
  renderAccount();
  go("#/signin");
}

export async function signedIn(value) {
  token.set(value);
  me = await api("/api/current-user/whoami");
  renderAccount();
}

async function render() {
  if (cleanup) { try { cleanup(); } catch { /* a screen's teardown never blocks navigation */ } cleanup = null; }
  const hash = (location.hash || "#/projects").split("?")[0];
  const view = document.getElementById("view");
  if (!token.get() && hash !== "#/signin") return go("#/signin");
  if (token.get() && !me && hash !== "#/signin") {
    try { me = await api("/api/current-user/whoami"); renderAccount(); } catch { token.clear(); return go("#/signin"); }
  }
  const match = routes.map(([re, name, args]) => [hash.match(re), name, args]).find(([m]) => m);
  if (!match) return go("#/projects");
  const [m, name, args] = match;
  document.body.dataset.screen = name;
  crumbs();
  mount(view, h("div", { class: "loading" }, "Loading…"));
  try {
    const screen = await import(`./screens/${name}.js`);
    cleanup = (await screen.render(view, args(m))) || null;
  } catch (err) {
    mount(view, h("div", { class: "alert alert-error", role: "alert" }, `Could not load this screen: ${err.message}`));
  }
}

window.addEventListener("hashchange", render);
window.addEventListener("labelloop:unauthorized", () => { if (token.get()) signOut(); });
render();
