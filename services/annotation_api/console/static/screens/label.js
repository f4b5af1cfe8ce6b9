// The label stream and task view: the vendored Label Studio editor, the shown model version's prediction as
// pre-annotation, submit / update / skip wired to the API, the backend's version polled after a submit, and
// interactive pre-annotation through /api/ml/{id}/interactive-annotating.
import { api } from "../api.js";
import { crumbs, projectNav, go } from "../app.js";
import { h, mount, toast, badge, stateKind, emptyState, checkbox } from "../ui.js";

let editorLoaded = null;

function loadEditor() {
  if (!editorLoaded) {
    editorLoaded = new Promise((resolve, reject) => {
      // Before the console's own stylesheet, so the console keeps its look where the two overlap.
      document.head.prepend(h("link", { rel: "stylesheet", href: "/console/editor/main.css" }));
      const script = h("script", { src: "/console/editor/main.js" });
      script.onload = () => resolve(window.LabelStudio);
      script.onerror = () => { editorLoaded = null; reject(new Error("the Label Studio editor is not installed: run `make run` (it fetches it into .vendor/)")); };
      document.head.append(script);
    });
  }
  return editorLoaded;
}

// The prediction annotators see: the project's chosen model version, else the newest prediction.
export function shownPrediction(task, version) {
  const predictions = task.predictions || [];
  const pool = version ? predictions.filter((p) => p.model_version === version) : predictions;
  return pool.slice().sort((a, b) => (b.created_at || "").localeCompare(a.created_at || "") || b.id - a.id)[0] || null;
}

export async function render(view, { project: projectId, task: taskId }) {
  const stream = !taskId;
  let project = await api(`/api/projects/${projectId}`);
  crumbs({ label: "Projects", href: "#/projects" }, { label: project.title, href: `#/p/${project.id}` }, { label: stream ? "Label stream" : `Task ${taskId}` });
  const holder = h("div", { id: "label-studio", class: "editor" });
  const info = h("div", { class: "task-info", "aria-live": "polite" });
  const modelsBox = h("div", { class: "card models-box", "aria-label": "Models", "aria-live": "polite" });
  const interactiveBox = h("div");
  const counter = h("span", { class: "muted" });
  let labeled = 0;
  let ls = null;
  let current = null;
  let currentPrediction = null;
  let started = Date.now();
  let pollTimer = null;
  let versions = new Map();
  const learned = new Set(); // backends whose version moved after this session's submits
  let disposed = false;
  let storedIds = new Set();

  const backends = await api(`/api/ml?project=${project.id}`);
  const interactive = backends.find((b) => b.is_interactive);
  backends.forEach((b) => versions.set(b.id, b.model_version));

  function drawModels(list, changed = new Set()) {
    mount(modelsBox, h("h2", {}, "Models"),
      list.length ? list.map((b) => h("div", { class: "model-line", "data-backend": b.id },
        h("div", { class: "row between" }, h("strong", {}, b.title), badge(b.readable_state || b.state, stateKind(b.state))),
        h("div", { class: `mono small ${changed.has(b.id) ? "flash" : ""}`, "data-testid": "live-version" }, "version ", b.model_version || "—"),
        learned.has(b.id) ? h("div", { class: "ok-note" }, "↑ new version after your annotations") : null,
        b.error_message ? h("div", { class: "alert alert-error small" }, b.error_message) : null))
        : h("p", { class: "muted" }, "No model connected. ", h("a", { href: `#/p/${project.id}/ml` }, "Connect one")),
      h("p", { class: "muted small" }, "Shown predictions: ", h("span", { class: "mono" }, project.model_version || "latest")));
  }
  drawModels(backends);

  // After a submit the backend learns online; poll its version for a while so each change is visible.
  function pollVersions() {
    clearTimeout(pollTimer);
    let rounds = 0;
    const tick = async () => {
      if (disposed) return;
      try {
        // The project too: its shown version follows a backend with auto-update on.
        const [list, fresh] = await Promise.all([api(`/api/ml?project=${project.id}`), api(`/api/projects/${project.id}`)]);
        project = fresh;
        const changed = new Set(list.filter((b) => versions.has(b.id) && versions.get(b.id) !== b.model_version).map((b) => b.id));
        changed.forEach((id) => learned.add(id));
        list.forEach((b) => versions.set(b.id, b.model_version));
        drawModels(list, changed); // keeps polling: an online learner moves once per annotation it receives
      } catch { /* polling is best effort */ }
      if (++rounds < 30) pollTimer = setTimeout(tick, 1500);
    };
    pollTimer = setTimeout(tick, 500);
  }

  let autoAccept = localStorage.getItem("autoAcceptSuggestions") === "true";
  let suggest = true;
  if (interactive) {
    const [sBox, s] = checkbox("Interactive suggestions", suggest, { name: "interactive" });
    const [aBox, a] = checkbox("Auto-accept suggestions", autoAccept, { name: "auto_accept" });
    s.addEventListener("change", () => { suggest = s.checked; if (ls?.store) ls.store.setAutoAnnotation(suggest); });
    a.addEventListener("change", () => { autoAccept = a.checked; if (ls?.store) ls.store.setAutoAcceptSuggestions(autoAccept); });
    mount(interactiveBox, h("div", { class: "card" }, h("h2", {}, "Interactive pre-annotation"),
      h("p", { class: "muted small" }, `Label a region: ${interactive.title} proposes more.`), sBox, aBox,
      h("div", { class: "muted small", "data-testid": "suggestion-status" })));
  }

  async function askSuggestions(region) {
    if (!interactive || !suggest || !ls || !current || region.fromSuggestion || region.origin === "prediction") return;
    const annotation = ls.store.annotationStore.selected;
    const all = annotation.serializeAnnotation();
    const rid = String(region.cleanId || region.pid || region.id).split("#")[0];
    const mine = all.filter((r) => String(r.id).split("#")[0] === rid);
    const context = { result: mine.length ? mine : all.slice(-1) };
    const status = interactiveBox.querySelector("[data-testid=suggestion-status]");
    if (status) status.textContent = "Asking the model…";
    const request = api(`/api/ml/${interactive.id}/interactive-annotating`, { method: "POST", body: { task: current.id, context } })
      .then((r) => {
        const results = (r.data && r.data.result) || [];
        if (status) status.textContent = r.errors && r.errors.length ? `Model error: ${r.errors.join("; ")}` : `${results.length} suggestion(s)`;
        return results;
      })
      .catch((err) => { if (status) status.textContent = `Model error: ${err.message}`; return []; });
    ls.store.loadSuggestions(request, (results) => results);
  }

  let saving = false;
  async function save(kind, annotation) {
    if (saving) return;
    saving = true;
    try { await store(kind, annotation); } finally { saving = false; }
  }

  // Keyboard submit / skip wherever the focus is, handled here alone (the editor's own hotkeys need its focus).
  function onKey(e) {
    if (!ls?.store || holder.dataset.ready !== "true" || !(e.ctrlKey || e.metaKey)) return;
    const selected = ls.store.annotationStore.selected;
    const stored = selected && storedIds.has(String(selected.pk));
    if (e.key === "Enter") { e.preventDefault(); e.stopPropagation(); save(stored ? "update" : "submit", selected); }
    else if (e.key === " " && e.ctrlKey) { e.preventDefault(); e.stopPropagation(); save("skip", null); }
  }
  document.addEventListener("keydown", onKey, true);

  // LSF 1.4 names its buttons "submit" / "skip-task" for assistive tech, "Update" included: use their text.
  const a11y = new MutationObserver(() => holder.querySelectorAll('button[aria-label="submit"], button[aria-label="skip-task"]')
    .forEach((b) => { if (b.textContent.trim()) b.setAttribute("aria-label", b.textContent.trim()); }));
  a11y.observe(holder, { childList: true, subtree: true, characterData: true });

  async function store(kind, annotation) {
    const result = annotation ? annotation.serializeAnnotation() : [];
    const lead_time = (Date.now() - started) / 1000;
    try {
      if (kind === "update") {
        await api(`/api/annotations/${annotation.pk}`, { method: "PATCH", body: { result, lead_time } });
        toast("Annotation updated", "ok");
        return;
      }
      const body = kind === "skip" ? { result: [], was_cancelled: true, lead_time } : { result, lead_time };
      if (currentPrediction && kind === "submit") body.parent_prediction = currentPrediction.id;
      const saved = await api(`/api/tasks/${current.id}/annotations`, { method: "POST", body });
      delete holder.dataset.ready; // this task is done: no second submit while the next one loads
      if (annotation && kind === "submit") annotation.updatePersonalKey?.(String(saved.id));
      labeled += kind === "submit" ? 1 : 0;
      counter.textContent = labeled ? `${labeled} labeled in this session` : "";
      toast(kind === "skip" ? `Task ${current.id} skipped` : `Task ${current.id} submitted`, "ok");
      if (kind === "submit") pollVersions();
      if (stream) next(); else go(`#/p/${project.id}`);
    } catch (err) {
      toast(`Not saved: ${err.message}`, "error");
    }
  }

  // ``version``: the shown model version to pick the prediction of; null for a task from /next, which
  // embeds only the predictions annotators see (the project's version as the server had it just then,
  // which may be newer than this page's copy of the project while the model learns online).
  async function show(task, version) {
    current = task;
    started = Date.now();
    const LabelStudio = await loadEditor();
    if (disposed) return;
    if (ls) { try { ls.destroy(); } catch { /* the old editor may already be gone */ } }
    holder.replaceChildren();
    delete holder.dataset.ready;
    const prediction = shownPrediction(task, version);
    currentPrediction = prediction;
    const annotations = (task.annotations || []).filter((a) => !a.was_cancelled);
    storedIds = new Set(annotations.map((a) => String(a.id)));
    mount(info,
      h("div", { class: "row wrap" }, h("strong", {}, `Task ${task.id}`),
        prediction ? badge(`pre-annotation: ${prediction.model_version}${prediction.score !== null && prediction.score !== undefined ? ` · score ${prediction.score.toFixed(2)}` : ""}`, "info") : badge("no prediction", "neutral"),
        annotations.length ? badge(`${annotations.length} annotation(s)`, "ok") : null),
      h("span", { class: "muted small" }, "Ctrl+Enter submit · Ctrl+Space skip · Ctrl+Z undo"));
    const interfaces = ["panel", "update", "submit", "skip", "controls", "side-column", "annotations:menu", "annotations:current", "predictions:menu", "topbar"];
    if (interactive) interfaces.push("auto-annotation");
    ls = new LabelStudio("label-studio", {
      config: project.label_config,
      interfaces,
      user: { pk: 1, firstName: "", lastName: "" },
      task: {
        id: task.id,
        data: task.data,
        annotations: annotations.map((a) => ({ id: String(a.id), pk: String(a.id), result: a.result, createdDate: a.created_at })),
        predictions: prediction ? [{ id: String(prediction.id), pk: String(prediction.id), result: prediction.result, score: prediction.score, model_version: prediction.model_version, createdBy: prediction.model_version }] : [],
      },
      onLabelStudioLoad: (instance) => {
        // The editor finishes loading the prediction after this callback: build the annotation from it then.
        setTimeout(() => {
          const store = instance.annotationStore;
          const c = store.annotations.length ? store.annotations[0]
            : store.predictions.length ? store.addAnnotationFromPrediction(store.predictions[0]) : store.addAnnotation({ userGenerate: true });
          store.selectAnnotation(c.id);
          if (interactive) { instance.setAutoAnnotation?.(suggest); instance.setAutoAcceptSuggestions?.(autoAccept); }
          holder.dataset.ready = "true";
        }, 0);
      },
      onSubmitAnnotation: (_, annotation) => save("submit", annotation),
      onUpdateAnnotation: (_, annotation) => save("update", annotation),
      onSkipTask: () => save("skip", null),
      onEntityCreate: (region) => { setTimeout(() => askSuggestions(region), 50); },
    });
    window.labelloopEditor = ls;
  }

  async function next() {
    try {
      const task = await api(`/api/projects/${project.id}/next`);
      await show(task, null);
    } catch (err) {
      if (err.status === 404) {
        if (ls) { try { ls.destroy(); } catch { /* already gone */ } ls = null; }
        mount(info);
        mount(holder, emptyState("All tasks are labeled", "Nothing left in the stream. Train the model or import more data.", h("a", { class: "btn btn-primary", href: `#/p/${project.id}` }, "Back to the data manager")));
      } else toast(err.message, "error");
    }
  }

  mount(view, projectNav(project, "label"),
    h("div", { class: "label-layout" },
      h("div", { class: "label-main" }, h("div", { class: "row between wrap" }, info, counter), holder),
      h("aside", { class: "label-side stack" }, modelsBox, interactiveBox,
        h("div", { class: "card" }, h("h2", {}, "Sampling"), h("p", { class: "muted small" }, project.sampling), h("a", { href: `#/p/${project.id}/ml` }, "Change")))));
  if (stream) await next();
  else await show(await api(`/api/tasks/${taskId}`), project.model_version);
  return () => { disposed = true; a11y.disconnect(); clearTimeout(pollTimer); document.removeEventListener("keydown", onKey, true); if (ls) { try { ls.destroy(); } catch { /* already gone */ } } };
}
