// Machine Learning settings: backends (add / validate / edit / delete / train), the model-version picker,
// sampling and automatic predictions. One screen per project, as in Label Studio.
import { api, followJob, TERMINAL } from "../api.js";
import { crumbs, projectNav } from "../app.js";
import { h, mount, field, checkbox, toast, confirmDialog, badge, stateKind, fmtNumber, fmtTime, emptyState } from "../ui.js";

const SAMPLING = [
  ["Sequential sampling", "Sequential", "Tasks in id order."],
  ["Uniform sampling", "Random", "Tasks in random order."],
  ["Uncertainty sampling", "Uncertainty (active learning)", "Lowest prediction score first: label what the model is least sure about."],
];

function backendForm(project, backend, onDone) {
  const title = h("input", { name: "title", value: backend?.title || "", maxlength: 500, placeholder: "My model" });
  const url = h("input", { name: "url", required: true, type: "url", value: backend?.url || "", placeholder: "http://127.0.0.1:9090" });
  const description = h("input", { name: "description", value: backend?.description || "" });
  const [authBox, auth] = checkbox("Use basic authentication", backend?.auth_method === "BASIC_AUTH", { name: "basic_auth" });
  const user = h("input", { name: "basic_auth_user", value: backend?.basic_auth_user || "", autocomplete: "off" });
  const pass = h("input", { name: "basic_auth_pass", type: "password", autocomplete: "new-password", placeholder: backend?.basic_auth_pass_is_set ? "(unchanged)" : "" });
  const authFields = h("div", { class: "grid two", hidden: !auth.checked }, field("User", user), field("Password", pass));
  auth.addEventListener("change", () => { authFields.hidden = !auth.checked; });
  const extra = h("textarea", { name: "extra_params", rows: 3, class: "code", placeholder: '{"key": "value"}' });
  extra.value = backend?.extra_params ? JSON.stringify(backend.extra_params, null, 2) : "";
  const [autoBox, autoUpdate] = checkbox("Allow version auto-update", backend ? backend.auto_update : true, { name: "auto_update" });
  const [interBox, interactive] = checkbox("Use for interactive pre-annotations", backend?.is_interactive, { name: "is_interactive" });
  const error = h("div", { class: "alert alert-error", role: "alert", hidden: true, "data-testid": "backend-error" });
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, "Validate and Save");
  const form = h("form", { class: "card form", "aria-label": backend ? "Edit model" : "Add model", onsubmit: async (e) => {
    e.preventDefault();
    error.hidden = true;
    let extraParams = null;
    if (extra.value.trim()) {
      try { extraParams = JSON.parse(extra.value); } catch (err) { error.textContent = `Extra params: not valid JSON (${err.message})`; error.hidden = false; return; }
    }
    const body = {
      title: title.value || null, url: url.value.trim(), description: description.value,
      auth_method: auth.checked ? "BASIC_AUTH" : "NONE", basic_auth_user: auth.checked ? user.value : null,
      extra_params: extraParams, auto_update: autoUpdate.checked, is_interactive: interactive.checked,
    };
    if (auth.checked && pass.value) body.basic_auth_pass = pass.value;
    submit.disabled = true; submit.textContent = "Validating…";
    try {
      if (backend) {
        await api(`/api/ml/${backend.id}`, { method: "PATCH", body });
        const checked = await api(`/api/ml/${backend.id}/validate`, { method: "POST" });
        if (checked.error_message && stateKind(checked.state) === "error") throw new Error(checked.error_message);
      } else {
        await api("/api/ml", { method: "POST", body: { ...body, project: project.id } });
      }
      toast(backend ? "Model saved" : "Model connected", "ok");
      onDone();
    } catch (err) {
      error.textContent = `Refused: ${err.message}`; error.hidden = false;
    } finally { submit.disabled = false; submit.textContent = "Validate and Save"; }
  } },
    h("h2", {}, backend ? `Edit ${backend.title}` : "Connect model"),
    h("div", { class: "grid two" }, field("Name", title), field("Backend URL", url, "The address of a Label Studio ML backend.")),
    field("Description", description),
    authBox, authFields,
    field("Extra params (JSON)", extra, "Sent to the backend's /setup."),
    h("div", { class: "row wrap" }, autoBox, interBox),
    error,
    h("div", { class: "row end" }, h("button", { class: "btn", type: "button", onclick: () => onDone(false) }, "Cancel"), submit));
  setTimeout(() => url.focus());
  return form;
}

function trainStatus(job) {
  const answer = job.result ? JSON.stringify(job.result) : null;
  return [
    h("span", {}, "Training job #", job.id, ": "), badge(job.status, job.status === "completed" ? "ok" : job.status === "failed" ? "error" : "busy"),
    job.error ? h("div", { class: "alert alert-error" }, job.error) : null,
    answer ? h("pre", { class: "answer" }, answer.length > 600 ? `${answer.slice(0, 600)}…` : answer) : null,
  ];
}

export async function render(view, { project: projectId }) {
  const stops = [];
  const trainJobs = new Map();
  let project = await api(`/api/projects/${projectId}`);
  crumbs({ label: "Projects", href: "#/projects" }, { label: project.title, href: `#/p/${project.id}` }, { label: "Machine learning" });
  const backendsBox = h("section", { class: "stack", "aria-label": "Models" });
  const versionsBox = h("section", { class: "card", "aria-label": "Model versions" });
  const optionsBox = h("section", { class: "card", "aria-label": "Labeling options" });
  const formBox = h("div");

  async function refresh() {
    const backends = await api(`/api/ml?project=${project.id}`);
    mount(backendsBox,
      h("div", { class: "row between" }, h("h2", {}, "Models"),
        h("button", { class: "btn btn-primary", type: "button", onclick: () => mount(formBox, backendForm(project, null, closeForm)) }, "Connect model")),
      backends.length === 0 ? emptyState("No model connected", "Connect a Label Studio ML backend to pre-label tasks and learn from annotations.") : null,
      backends.map((b) => {
        const train = h("div", { class: "train-status", "aria-live": "polite" }, trainJobs.has(b.id) ? trainStatus(trainJobs.get(b.id)) : null);
        return h("article", { class: "card backend", "data-backend": b.id },
          h("div", { class: "row between wrap" },
            h("div", {}, h("h3", {}, b.title, " ", badge(b.readable_state || b.state, stateKind(b.state)), b.is_interactive ? badge("interactive", "info") : null),
              h("div", { class: "muted mono" }, b.url)),
            h("div", { class: "row wrap" },
              h("a", { class: "btn", href: `#/p/${project.id}/model/${b.id}` }, "Model page"),
              h("button", { class: "btn", type: "button", onclick: async (e) => {
                e.target.disabled = true;
                try { const r = await api(`/api/ml/${b.id}/validate`, { method: "POST" }); toast(r.error_message ? `Refused: ${r.error_message}` : `Connected: ${r.model_version}`, r.error_message ? "error" : "ok"); } catch (err) { toast(err.message, "error"); }
                refresh();
              } }, "Validate"),
              h("button", { class: "btn", type: "button", onclick: () => mount(formBox, backendForm(project, b, closeForm)) }, "Edit"),
              h("button", { class: "btn btn-primary", type: "button", onclick: async (e) => {
                e.target.disabled = true;
                try {
                  const job = await api(`/api/ml/${b.id}/train`, { method: "POST", body: {} });
                  trainJobs.set(b.id, job);
                  mount(train, trainStatus(job));
                  stops.push(followJob(job.id, (j) => {
                    trainJobs.set(b.id, j);
                    mount(train, trainStatus(j));
                    if (TERMINAL.has(j.status)) { e.target.disabled = false; refresh(); }
                  }));
                } catch (err) { mount(train, h("div", { class: "alert alert-error" }, `Training refused: ${err.message}`)); e.target.disabled = false; }
              } }, "Start Training"),
              h("button", { class: "btn btn-danger-ghost", type: "button", "aria-label": `Delete ${b.title}`, onclick: async () => {
                if (!(await confirmDialog("Delete this model connection?", `${b.title} (${b.url}) will be disconnected. Its predictions stay.`))) return;
                try { await api(`/api/ml/${b.id}`, { method: "DELETE" }); toast("Model disconnected", "ok"); refresh(); } catch (err) { toast(err.message, "error"); }
              } }, "Delete"))),
          h("dl", { class: "stats inline" },
            h("div", {}, h("dt", {}, "Version"), h("dd", { class: "mono", "data-testid": "backend-version" }, b.model_version || "—")),
            h("div", {}, h("dt", {}, "Updated"), h("dd", {}, fmtTime(b.updated_at)))),
          b.error_message ? h("div", { class: "alert alert-error" }, h("strong", {}, "Last error: "), b.error_message) : null,
          b.description ? h("p", { class: "muted" }, b.description) : null,
          train);
      }));
    await refreshVersions();
  }

  async function refreshVersions() {
    const [versions, fresh] = await Promise.all([
      api(`/api/projects/${project.id}/model-versions?extended=true`),
      api(`/api/projects/${project.id}`),
    ]);
    project = fresh;
    const rows = versions.static || [];
    const select = h("select", { name: "model_version" },
      h("option", { value: "" }, "Latest of any model"),
      rows.map((v) => h("option", { value: v.model_version, selected: v.model_version === project.model_version }, `${v.model_version} — ${fmtNumber(v.count)} predictions`)));
    select.addEventListener("change", async () => {
      try { project = await api(`/api/projects/${project.id}`, { method: "PATCH", body: { model_version: select.value } }); toast(select.value ? `Annotators now see ${select.value}` : "Annotators see the latest predictions", "ok"); refreshVersions(); } catch (err) { toast(err.message, "error"); }
    });
    mount(versionsBox,
      h("h2", {}, "Model versions"),
      h("p", { class: "muted" }, "Which model's predictions annotators see as pre-annotations, and the data manager's score column."),
      field("Predictions shown to annotators", select),
      rows.length ? h("table", { class: "table compact" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Version"), h("th", { scope: "col", class: "num" }, "Predictions"), h("th", { scope: "col" }, "Latest"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
        h("tbody", {}, rows.map((v) => h("tr", { "data-version": v.model_version },
          h("td", { class: "mono" }, v.model_version, v.model_version === project.model_version ? badge("shown", "ok") : null),
          h("td", { class: "num" }, fmtNumber(v.count)),
          h("td", {}, fmtTime(v.latest)),
          h("td", { class: "end" }, h("button", { class: "btn btn-danger-ghost small", type: "button", onclick: async () => {
            if (!(await confirmDialog("Delete this version's predictions?", `${fmtNumber(v.count)} predictions of ${v.model_version} will be deleted.`))) return;
            try {
              const r = await api(`/api/projects/${project.id}/model-versions`, { method: "DELETE", body: { model_version: v.model_version } });
              toast(`Deleted ${fmtNumber(r.deleted_predictions)} predictions of ${v.model_version}`, "ok");
              refreshVersions();
            } catch (err) { toast(err.message, "error"); }
          } }, "Delete predictions")))))) : h("p", { class: "muted" }, "No predictions yet: retrieve some from the data manager."));
    renderOptions();
  }

  function renderOptions() {
    const sampling = h("fieldset", { class: "stack tight" }, h("legend", {}, "Task sampling in the label stream"),
      SAMPLING.map(([value, label, hint]) => {
        const input = h("input", { type: "radio", name: "sampling", value, checked: project.sampling === value });
        input.addEventListener("change", () => save({ sampling: value }, `Sampling: ${label}`));
        return h("label", { class: "check" }, input, h("span", {}, h("strong", {}, label), " ", h("span", { class: "muted" }, hint)));
      }));
    const [autoBox, auto] = checkbox("Retrieve predictions when loading a task automatically", project.evaluate_predictions_automatically, { name: "evaluate_predictions_automatically" });
    auto.addEventListener("change", () => save({ evaluate_predictions_automatically: auto.checked }, auto.checked ? "Predictions will be retrieved on load" : "Automatic predictions off"));
    mount(optionsBox, h("h2", {}, "Labeling options"), sampling, autoBox);
  }

  async function save(body, message) {
    try { project = await api(`/api/projects/${project.id}`, { method: "PATCH", body }); toast(message, "ok"); } catch (err) { toast(err.message, "error"); }
  }

  function closeForm() { mount(formBox); refresh(); }

  mount(view, projectNav(project, "ml"), h("div", { class: "ml-layout" }, h("div", { class: "stack" }, formBox, backendsBox), h("div", { class: "stack" }, versionsBox, optionsBox)));
  await refresh();
  return () => stops.forEach((s) => s());
}
