// Create a project from a template or pasted XML (validated by the API, errors inline); edit; delete.
import { api } from "../api.js";
import { crumbs, go, projectNav } from "../app.js";
import { h, mount, field, toast, confirmDialog } from "../ui.js";
import { TEMPLATES } from "../templates.js";

export async function render(view, { project: projectId }) {
  const project = projectId ? await api(`/api/projects/${projectId}`) : null;
  crumbs({ label: "Projects", href: "#/projects" }, ...(project ? [{ label: project.title, href: `#/p/${project.id}` }, { label: "Settings" }] : [{ label: "New project" }]));
  const title = h("input", { name: "title", required: true, maxlength: 500, value: project ? project.title : "" });
  const description = h("textarea", { name: "description", rows: 2 });
  description.value = project ? project.description : "";
  const xml = h("textarea", { name: "label_config", rows: 12, class: "code", spellcheck: "false" });
  const configError = h("div", { class: "alert alert-error", role: "alert", id: "config-error", hidden: true });
  const configOk = h("div", { class: "ok-note", hidden: true }, "✓ Valid config");
  xml.setAttribute("aria-describedby", "config-error");
  let chosen = project ? "custom" : "text-classification";
  xml.value = project ? project.label_config : TEMPLATES[0].config;

  const choices = h("div", { class: "templates", role: "radiogroup", "aria-label": "Template" }, TEMPLATES.map((t) => {
    const input = h("input", { type: "radio", name: "template", value: t.id, checked: t.id === chosen });
    input.addEventListener("click", () => { chosen = t.id; if (t.id !== "custom") xml.value = t.config; validate(); });
    return h("label", { class: "template" }, input, h("strong", {}, t.title), h("span", { class: "muted" }, t.text));
  }));

  let timer = null;
  async function validate() {
    configError.hidden = true; configOk.hidden = true;
    try {
      await api("/api/projects/validate", { method: "POST", body: { label_config: xml.value } });
      configOk.hidden = false;
      return true;
    } catch (err) {
      configError.textContent = err.message;
      configError.hidden = false;
      return false;
    }
  }
  xml.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(validate, 400); });

  const submit = h("button", { class: "btn btn-primary", type: "submit" }, project ? "Save" : "Create project");
  const form = h("form", { class: "card form", onsubmit: async (e) => {
    e.preventDefault();
    if (!(await validate())) { xml.focus(); return; }
    submit.disabled = true;
    try {
      const body = { title: title.value, description: description.value, label_config: xml.value };
      const saved = project
        ? await api(`/api/projects/${project.id}`, { method: "PATCH", body })
        : await api("/api/projects", { method: "POST", body });
      toast(project ? "Project saved" : "Project created", "ok");
      go(project ? `#/p/${saved.id}` : `#/p/${saved.id}/import`);
    } catch (err) {
      configError.textContent = err.message;
      configError.hidden = false;
    } finally { submit.disabled = false; }
  } },
    field("Project name", title),
    field("Description", description),
    project ? null : h("fieldset", {}, h("legend", {}, "Labeling template"), choices),
    field("Label config (XML)", xml, "Label Studio config. Checked by the API as you type."),
    configError, configOk,
    h("div", { class: "row end" }, h("a", { class: "btn", href: project ? `#/p/${project.id}` : "#/projects" }, "Cancel"), submit));

  const danger = project ? h("section", { class: "card danger-zone" },
    h("h2", {}, "Delete project"),
    h("p", { class: "muted" }, "Deletes the project with all its tasks, annotations, predictions and model connections."),
    h("button", { class: "btn btn-danger", type: "button", onclick: async (e) => {
      if (!(await confirmDialog("Delete this project?", `“${project.title}” and its ${project.task_number} tasks will be deleted. This cannot be undone.`))) return;
      e.target.disabled = true;
      e.target.textContent = "Deleting…";
      try {
        await api(`/api/projects/${project.id}`, { method: "DELETE" });
        toast("Project deleted", "ok");
        go("#/projects");
      } catch (err) { toast(err.message, "error"); e.target.disabled = false; e.target.textContent = "Delete project"; }
    } }, "Delete project")) : null;

  mount(view, project ? projectNav(project, "settings") : h("div", { class: "page-head" }, h("h1", {}, "New project")), form, danger);
  if (!project) title.focus();
  validate();
}
