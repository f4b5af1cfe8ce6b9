// The data manager: keyset-paged task table, score sort, selection, bulk actions and the job panel.
import { api } from "../api.js";
import { crumbs, projectNav, query, setQuery, go } from "../app.js";
import { h, mount, fmtNumber, toast, confirmDialog, field, emptyState } from "../ui.js";
import { JobPanel } from "../jobs.js";

const PAGE = 50;
const ORDERINGS = [["id", "Oldest first"], ["-id", "Newest first"], ["prediction_score", "Score: lowest first (least certain)"], ["-prediction_score", "Score: highest first"]];

function preview(data) {
  const values = Object.values(data || {});
  const text = values.map((v) => (typeof v === "string" ? v : JSON.stringify(v))).join(" · ");
  return text.length > 140 ? `${text.slice(0, 140)}…` : text;
}

function thresholdDialog() {
  return new Promise((resolve) => {
    const input = h("input", { type: "number", min: 0, max: 1, step: 0.05, value: 0.5, name: "threshold" });
    const dialog = h("dialog", { class: "dialog", "aria-label": "Create annotations from predictions" },
      h("h2", {}, "Create annotations from predictions"),
      h("p", {}, "Each selected task's prediction of the shown model version becomes an annotation when its score reaches the threshold."),
      h("form", { method: "dialog" }, field("Score threshold", input),
        h("div", { class: "row end" }, h("button", { class: "btn", value: "cancel" }, "Cancel"), h("button", { class: "btn btn-primary", value: "ok" }, "Create annotations"))));
    dialog.addEventListener("close", () => { resolve(dialog.returnValue === "ok" ? Number(input.value) : null); dialog.remove(); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export async function render(view, { project: projectId }) {
  let project = await api(`/api/projects/${projectId}`);
  crumbs({ label: "Projects", href: "#/projects" }, { label: project.title });
  let ordering = query().get("ordering") || "id";
  const selected = new Set();
  let allSelected = false;
  let loaded = [];
  let cursor = null;
  let exhausted = false;
  let loading = false;
  let generation = 0; // bumped by reload(): a page of an earlier order arriving late is dropped

  const jobs = new JobPanel(project.id, async (job) => {
    toast(`Job #${job.id} ${job.status}`, job.status === "completed" ? "ok" : "error");
    project = await api(`/api/projects/${project.id}`);
    mount(head, projectNav(project, "data"));
    reload();
  });
  const head = h("div", {}, projectNav(project, "data"));
  const tbody = h("tbody");
  const headCheck = h("input", { type: "checkbox", "aria-label": "Select all tasks" });
  const selInfo = h("span", { class: "muted", "aria-live": "polite" });
  const more = h("div", { class: "more muted" });
  const orderSel = h("select", { name: "ordering", "aria-label": "Order" }, ORDERINGS.map(([v, l]) => h("option", { value: v, selected: v === ordering }, l)));
  orderSel.addEventListener("change", () => { ordering = orderSel.value; setQuery({ ordering }); reload(); });
  headCheck.addEventListener("change", () => { allSelected = headCheck.checked; selected.clear(); drawRows(); });

  const sortButton = h("button", { class: "sort", type: "button", title: "Sort by prediction score", onclick: () => {
    ordering = ordering === "prediction_score" ? "-prediction_score" : "prediction_score";
    orderSel.value = ordering;
    setQuery({ ordering });
    reload();
  } }, "Score");

  const actionButtons = [
    ["retrieve_tasks_predictions", "Retrieve predictions", "btn-primary"],
    ["predictions_to_annotations", "Create annotations from predictions", ""],
    ["delete_tasks_predictions", "Delete predictions", ""],
    ["delete_tasks", "Delete tasks", "btn-danger-ghost"],
  ].map(([id, label, cls]) => h("button", { class: `btn ${cls}`, type: "button", "data-action": id, onclick: () => runAction(id, label) }, label));

  function selection() {
    return allSelected ? { all: true, excluded: [...selected] } : { all: false, included: [...selected] };
  }
  function selectedCount() {
    return allSelected ? Math.max(project.task_number - selected.size, 0) : selected.size;
  }

  async function runAction(id, label) {
    if (!selectedCount()) { toast("Select tasks first (or tick the header box for all).", "error"); return; }
    const body = { selectedItems: selection() };
    if (id === "predictions_to_annotations") {
      const threshold = await thresholdDialog();
      if (threshold === null) return;
      body.threshold = threshold;
      if (project.model_version) body.model_version = project.model_version;
    } else if (id.startsWith("delete")) {
      if (!(await confirmDialog(`${label}?`, `${label} on ${fmtNumber(selectedCount())} tasks. This cannot be undone.`))) return;
    }
    try {
      const r = await api(`/api/dm/actions?id=${id}&project=${project.id}`, { method: "POST", body });
      const ids = r.job_ids && r.job_ids.length ? r.job_ids : r.job_id ? [r.job_id] : [];
      if (ids.length) {
        for (const jobId of ids) jobs.track(await api(`/api/jobs/${jobId}`));
      } else {
        toast(r.detail || `${label}: ${fmtNumber(r.processed_items)} items`, "ok");
        project = await api(`/api/projects/${project.id}`);
        mount(head, projectNav(project, "data"));
        reload();
      }
    } catch (err) { toast(`${label}: ${err.message}`, "error"); }
  }

  function row(task) {
    const checked = allSelected ? !selected.has(task.id) : selected.has(task.id);
    const box = h("input", { type: "checkbox", "aria-label": `Select task ${task.id}` });
    box.checked = checked;
    box.addEventListener("change", () => {
      if (box.checked !== allSelected) selected.add(task.id); else selected.delete(task.id);
      updateSelInfo();
    });
    const score = task.predictions_score;
    return h("tr", { "data-task": task.id },
      h("td", { class: "check-cell" }, box),
      h("td", { class: "num mono" }, h("a", { href: `#/p/${project.id}/task/${task.id}` }, task.id)),
      h("td", { class: "preview" }, h("a", { href: `#/p/${project.id}/task/${task.id}`, class: "plain" }, preview(task.data))),
      h("td", { class: "num count" }, task.total_annotations ? h("span", { class: "pill ok" }, task.total_annotations) : h("span", { class: "muted" }, "0")),
      h("td", { class: "num count" }, task.total_predictions ? h("span", { class: "pill info" }, task.total_predictions) : h("span", { class: "muted" }, "0")),
      h("td", { class: "num score", "data-testid": "score" }, score === null || score === undefined ? h("span", { class: "muted" }, "—")
        : h("span", { class: "scorebar", style: `--s:${Math.max(0, Math.min(1, score))}` }, score.toFixed(2))));
  }

  function drawRows() {
    mount(tbody, loaded.map(row));
    updateSelInfo();
  }

  function updateSelInfo() {
    const n = selectedCount();
    selInfo.textContent = n ? `${fmtNumber(n)} selected` : "";
    headCheck.checked = allSelected && selected.size === 0;
    headCheck.indeterminate = (allSelected && selected.size > 0) || (!allSelected && selected.size > 0);
    actionButtons.forEach((b) => { b.disabled = n === 0; });
  }

  async function loadMore() {
    if (loading || exhausted) return;
    loading = true;
    const mine = generation;
    more.textContent = "Loading…";
    try {
      // Keyset paging in every order (the API's next_after: an id, or score and id): each scroll costs one
      // page at any depth, never a count.
      const params = new URLSearchParams({ project: project.id, page_size: PAGE, ordering });
      if (cursor !== null) params.set("after", cursor);
      const res = await api(`/api/tasks?${params}`);
      if (mine !== generation) return;
      const tasks = res.tasks || [];
      loaded = loaded.concat(tasks);
      tasks.forEach((t) => tbody.append(row(t)));
      cursor = res.next_after;
      exhausted = cursor === null || cursor === undefined;
      more.textContent = exhausted ? (loaded.length ? `All ${fmtNumber(loaded.length)} tasks shown` : "") : "Scroll for more";
      if (!loaded.length) mount(more, emptyState("No tasks yet", "Import JSON, JSONL or CSV to start.", h("a", { class: "btn btn-primary", href: `#/p/${project.id}/import` }, "Import data")));
    } catch (err) {
      more.textContent = `Could not load tasks: ${err.message}`;
    } finally {
      loading = false;
      updateSelInfo();
      if (mine !== generation) loadMore();
      // The observer only reports changes: had "more" come into view while this page loaded (ignored
      // above) and stayed there, scrolling would stall. Observing again reports where it is now.
      else if (!exhausted) { observer.unobserve(more); observer.observe(more); }
    }
  }

  function reload() {
    sortButton.textContent = `Score ${ordering === "prediction_score" ? "▲" : ordering === "-prediction_score" ? "▼" : "↕"}`;
    generation += 1;
    loaded = []; cursor = null; exhausted = false;
    mount(tbody);
    loadMore();
  }

  const observer = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMore(); }, { rootMargin: "300px" });

  mount(view, head,
    jobs.el,
    h("div", { class: "toolbar card" },
      h("div", { class: "row wrap" }, h("label", { class: "check" }, headCheck, h("span", {}, "All")), selInfo),
      h("div", { class: "row wrap actions" }, actionButtons),
      h("div", { class: "row wrap" }, orderSel, h("button", { class: "btn btn-primary", type: "button", onclick: () => go(`#/p/${project.id}/label`) }, "Label all tasks"))),
    h("div", { class: "table-wrap card" },
      h("table", { class: "table", "aria-label": "Tasks" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col", class: "check-cell" }, h("span", { class: "sr-only" }, "Selected")),
          h("th", { scope: "col", class: "num" }, "ID"),
          h("th", { scope: "col" }, "Data"),
          h("th", { scope: "col", class: "num count" }, "Annotations"),
          h("th", { scope: "col", class: "num count" }, "Predictions"),
          h("th", { scope: "col", class: "num" }, sortButton))),
        tbody),
      more));
  observer.observe(more);
  reload();
  jobs.load();
  return () => { observer.disconnect(); jobs.stop(); };
}
