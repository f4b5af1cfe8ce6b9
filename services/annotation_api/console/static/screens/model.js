// A model page: the backend's versions over time and how well each version's predictions agreed with the
// annotations made afterwards (an inline SVG chart).
import { api } from "../api.js";
import { crumbs, projectNav } from "../app.js";
import { h, mount, badge, stateKind, fmtNumber, fmtTime, emptyState } from "../ui.js";

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  children.flat().forEach((c) => el.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return el;
}

export function agreementChart(versions) {
  const points = versions.filter((v) => v.agreement !== null && v.agreement !== undefined);
  const W = 640, H = 240, L = 44, R = 48, T = 24, B = 40;
  const x = (i) => L + 24 + (versions.length <= 1 ? (W - L - R - 48) / 2 : (i * (W - L - R - 48)) / (versions.length - 1));
  const y = (a) => T + (1 - a) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "Agreement of each model version with later annotations" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "grid" }), s("text", { x: L - 8, y: y(t) + 4, "text-anchor": "end", class: "axis" }, `${Math.round(t * 100)}%`));
  }
  const idx = (v) => versions.indexOf(v);
  if (points.length > 1) svg.append(s("polyline", { points: points.map((v) => `${x(idx(v))},${y(v.agreement)}`).join(" "), class: "line" }));
  if (!points.length) svg.append(s("text", { x: (W + L - R) / 2, y: (H - B + T) / 2, "text-anchor": "middle", class: "axis" }, "No annotations after these predictions yet"));
  versions.forEach((v, i) => {
    const label = v.model_version.length > 14 ? `${v.model_version.slice(0, 13)}…` : v.model_version;
    svg.append(s("text", { x: x(i), y: H - B + 18, "text-anchor": "middle", class: "axis" }, label));
    if (v.agreement !== null && v.agreement !== undefined) {
      svg.append(s("circle", { cx: x(i), cy: y(v.agreement), r: 5, class: "dot" }, s("title", {}, `${v.model_version}: ${(v.agreement * 100).toFixed(1)}% over ${v.compared} tasks`)));
      svg.append(s("text", { x: x(i), y: y(v.agreement) - 10, "text-anchor": "middle", class: "value" }, `${Math.round(v.agreement * 100)}%`));
    }
  });
  return svg;
}

export async function render(view, { project: projectId, backend: backendId }) {
  const [project, backend] = await Promise.all([api(`/api/projects/${projectId}`), api(`/api/ml/${backendId}`)]);
  crumbs({ label: "Projects", href: "#/projects" }, { label: project.title, href: `#/p/${project.id}` }, { label: "Machine learning", href: `#/p/${project.id}/ml` }, { label: backend.title });
  let body;
  try {
    const perf = await api(`/api/ml/${backendId}/performance`);
    const versions = perf.versions || [];
    body = versions.length === 0
      ? emptyState("No versions yet", "Retrieve predictions and label tasks: each version's agreement with later annotations appears here.")
      : [h("div", { class: "card" }, h("h2", {}, "Agreement with later annotations"),
        h("p", { class: "muted" }, "For each version, how often its predictions matched what annotators labeled afterwards on the same tasks."),
        agreementChart(versions)),
      h("div", { class: "card table-wrap" }, h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ["Version", "First seen", "Predictions", "Compared", "Agreement"].map((c, i) => h("th", { scope: "col", class: i > 1 ? "num" : "" }, c)))),
        h("tbody", {}, versions.map((v) => h("tr", { "data-version": v.model_version },
          h("td", { class: "mono" }, v.model_version, v.model_version === backend.model_version ? badge("current", "ok") : null),
          h("td", {}, fmtTime(v.first_seen_at)),
          h("td", { class: "num" }, fmtNumber(v.predictions)),
          h("td", { class: "num" }, fmtNumber(v.compared)),
          h("td", { class: "num" }, v.agreement === null || v.agreement === undefined ? "—" : `${(v.agreement * 100).toFixed(1)}%`))))))];
  } catch (err) {
    body = h("div", { class: "alert alert-error", role: "alert" }, `Performance is unavailable: ${err.message}`);
  }
  mount(view, projectNav(project, "ml"), h("div", { class: "stack" },
    h("div", { class: "card" }, h("div", { class: "row between wrap" },
      h("div", {}, h("h2", {}, backend.title, " ", badge(backend.readable_state || backend.state, stateKind(backend.state))), h("div", { class: "muted mono" }, backend.url)),
      h("dl", { class: "stats inline" }, h("div", {}, h("dt", {}, "Current version"), h("dd", { class: "mono" }, backend.model_version || "—")))),
      backend.error_message ? h("div", { class: "alert alert-error" }, backend.error_message) : null),
    body));
}
