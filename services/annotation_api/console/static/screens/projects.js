// The project list: every project with its counters, newest first.
import { api } from "../api.js";
import { crumbs } from "../app.js";
import { h, mount, fmtNumber, emptyState } from "../ui.js";

export async function render(view) {
  crumbs({ label: "Projects" });
  const page = await api("/api/projects?page_size=100");
  const projects = page.results || [];
  const create = h("a", { class: "btn btn-primary", href: "#/projects/new" }, "Create project");
  mount(view,
    h("div", { class: "page-head" }, h("h1", {}, "Projects"), create),
    projects.length === 0
      ? emptyState("No projects yet", "Create a project from a template, import data, connect a model.", h("a", { class: "btn btn-primary", href: "#/projects/new" }, "Create your first project"))
      : h("ul", { class: "grid cards", "aria-label": "Projects" }, projects.map((p) => {
        const done = p.task_number ? Math.round((100 * p.num_tasks_with_annotations) / p.task_number) : 0;
        return h("li", {}, h("a", { class: "card project-card", href: `#/p/${p.id}` },
          h("div", { class: "row between" }, h("h2", {}, p.title || `Project ${p.id}`), h("span", { class: "muted" }, `#${p.id}`)),
          h("p", { class: "muted clamp" }, p.description || "No description"),
          h("div", { class: "meter", role: "img", "aria-label": `${done}% labeled` }, h("span", { style: `width:${done}%` })),
          h("dl", { class: "stats" },
            h("div", {}, h("dt", {}, "Tasks"), h("dd", {}, fmtNumber(p.task_number))),
            h("div", {}, h("dt", {}, "Labeled"), h("dd", {}, fmtNumber(p.num_tasks_with_annotations))),
            h("div", {}, h("dt", {}, "Predictions"), h("dd", {}, fmtNumber(p.total_predictions_number))))));
      })));
}
