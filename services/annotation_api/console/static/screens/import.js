// Import tasks: JSON / JSONL / CSV files or pasted text, parsed here and sent in batches with a progress bar.
import { api } from "../api.js";
import { crumbs, projectNav, go } from "../app.js";
import { h, mount, field, fmtNumber, toast } from "../ui.js";
import { TEMPLATES } from "../templates.js";

const BATCH = 2000;

class RowError extends Error {
  constructor(row, message) { super(`Row ${row}: ${message}`); this.row = row; }
}

function parseCsvLine(line) {
  const out = []; let cur = ""; let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; }
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { out.push(cur); cur = ""; }
    else cur += c;
  }
  out.push(cur);
  return out;
}

function asTask(value, row) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new RowError(row, "a task must be a JSON object");
  return "data" in value ? value : { data: value };
}

// Parses text into tasks; a RowError names the first bad row (1-based, as a person counts).
export function parseTasks(text, name = "") {
  const trimmed = text.trim();
  if (!trimmed) return [];
  const kind = name.endsWith(".csv") || name.endsWith(".tsv") ? "csv"
    : name.endsWith(".jsonl") || name.endsWith(".ndjson") ? "jsonl"
    : trimmed.startsWith("[") || (trimmed.startsWith("{") && !trimmed.includes("\n{")) ? "json"
    : trimmed.startsWith("{") ? "jsonl" : "csv";
  if (kind === "json") {
    let parsed;
    try { parsed = JSON.parse(trimmed); } catch (err) { throw new RowError(1, `not valid JSON (${err.message})`); }
    const list = Array.isArray(parsed) ? parsed : [parsed];
    return list.map((item, i) => asTask(item, i + 1));
  }
  const lines = trimmed.split(/\r?\n/);
  if (kind === "jsonl") {
    return lines.filter((l) => l.trim()).map((line, i) => {
      try { return asTask(JSON.parse(line), i + 1); } catch (err) { throw err instanceof RowError ? err : new RowError(i + 1, `not valid JSON (${err.message})`); }
    });
  }
  const header = parseCsvLine(lines[0]).map((c) => c.trim());
  if (header.some((c) => !c)) throw new RowError(1, "the CSV header has an empty column name");
  return lines.slice(1).filter((l) => l.trim()).map((line, i) => {
    const cells = parseCsvLine(line);
    if (cells.length !== header.length) throw new RowError(i + 2, `${cells.length} columns, the header has ${header.length}`);
    return { data: Object.fromEntries(header.map((c, j) => [c, cells[j]])) };
  });
}

export async function render(view, { project: projectId }) {
  const project = await api(`/api/projects/${projectId}`);
  crumbs({ label: "Projects", href: "#/projects" }, { label: project.title, href: `#/p/${project.id}` }, { label: "Import" });
  const files = h("input", { type: "file", name: "files", multiple: true, accept: ".json,.jsonl,.ndjson,.csv,.tsv,application/json,text/csv" });
  const paste = h("textarea", { name: "paste", rows: 6, class: "code", placeholder: '[{"text": "…"}] or one JSON object per line, or CSV with a header row' });
  const template = TEMPLATES.find((t) => t.config.replace(/\s/g, "") === project.label_config.replace(/\s/g, ""));
  const bar = h("progress", { max: 100, value: 0, "aria-label": "Import progress" });
  const status = h("div", { class: "muted", "aria-live": "polite" });
  const error = h("div", { class: "alert alert-error", role: "alert", hidden: true });
  const progress = h("div", { class: "progress-box", hidden: true }, bar, status);
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, "Import");

  async function run(e) {
    e.preventDefault();
    error.hidden = true;
    let tasks = [];
    try {
      for (const file of files.files) tasks = tasks.concat(parseTasks(await file.text(), file.name.toLowerCase()).map((t) => ({ t, src: file.name })));
      if (paste.value.trim()) tasks = tasks.concat(parseTasks(paste.value).map((t) => ({ t, src: "pasted text" })));
    } catch (err) {
      error.textContent = err.message; error.hidden = false; return;
    }
    if (!tasks.length) { error.textContent = "Choose a file or paste some tasks first."; error.hidden = false; return; }
    submit.disabled = true; progress.hidden = false;
    let sent = 0;
    try {
      for (let start = 0; start < tasks.length; start += BATCH) {
        const batch = tasks.slice(start, start + BATCH).map((x) => x.t);
        try {
          await api(`/api/projects/${project.id}/import`, { method: "POST", body: batch });
        } catch (err) {
          const msg = err.message.replace(/tasks\[(\d+)\]\.?/, (_, i) => `Row ${start + Number(i) + 1}: `);
          throw new Error(`${msg}${sent ? ` (the first ${fmtNumber(sent)} tasks were imported)` : " (nothing was imported)"}`);
        }
        sent += batch.length;
        bar.value = Math.round((100 * sent) / tasks.length);
        status.textContent = `${fmtNumber(sent)} of ${fmtNumber(tasks.length)} tasks imported`;
      }
      toast(`Imported ${fmtNumber(sent)} tasks`, "ok");
      go(`#/p/${project.id}`);
    } catch (err) {
      error.textContent = err.message; error.hidden = false;
    } finally { submit.disabled = false; }
  }

  mount(view, projectNav(project, "import"),
    h("form", { class: "card form", onsubmit: run },
      h("h2", {}, "Import tasks"),
      h("p", { class: "muted" }, "JSON (a list of tasks), JSONL (one task per line) or CSV (a header row names the data fields). A task is ", h("code", {}, '{"data": {…}}'), " or just its data."),
      field("Files", files),
      field("Or paste tasks", paste, template && template.sample ? `Example for this template: ${template.sample}` : null),
      error, progress,
      h("div", { class: "row end" }, submit)));
}
