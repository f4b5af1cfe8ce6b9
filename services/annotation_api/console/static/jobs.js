// The job panel: live progress of bulk jobs (SSE with polling fallback). It is rebuilt from
// GET /api/jobs on every load, so it survives a page reload.
import { api, followJob, TERMINAL } from "./api.js";
import { h, mount, fmtNumber, fmtDuration, badge, toast } from "./ui.js";

const HIDDEN_KEY = "labelloop.hiddenJobs";
const KIND_LABEL = {
  predict: "Retrieve predictions", train: "Training", predictions_to_annotations: "Create annotations",
  delete_project: "Delete project", delete_tasks: "Delete tasks", delete_predictions: "Delete predictions",
  delete_annotations: "Delete annotations",
};

function hidden() { try { return new Set(JSON.parse(localStorage.getItem(HIDDEN_KEY) || "[]")); } catch { return new Set(); } }
function hide(id) { const s = hidden(); s.add(id); localStorage.setItem(HIDDEN_KEY, JSON.stringify([...s].slice(-200))); }

// A finished prediction job whose backend answered every task with nothing: say so, or it looks broken.
function silentModel(job) {
  return job.kind === "predict" && job.status === "completed" && job.done > 0 && !job.predicted && !job.skipped && !job.failed;
}

export class JobPanel {
  constructor(projectId, onFinished) {
    this.projectId = projectId;
    this.onFinished = onFinished;
    this.cards = new Map();
    this.stops = [];
    this.list = h("div", { class: "jobs-list" });
    this.el = h("section", { class: "jobs", "aria-label": "Jobs", hidden: true }, this.list);
  }

  async load() {
    const jobs = await api(`/api/jobs?project=${this.projectId}&limit=10`);
    const skip = hidden();
    const recent = jobs.filter((j) => !skip.has(j.id) && (!TERMINAL.has(j.status) || Date.now() - new Date(j.updated_at).getTime() < 10 * 60 * 1000)).slice(0, 4);
    recent.reverse().forEach((j) => this.track(j));
  }

  track(job) {
    if (this.cards.has(job.id)) return;
    const card = h("article", { class: "job card", "data-job": job.id, "aria-live": "polite" });
    this.cards.set(job.id, card);
    this.list.prepend(card);
    this.el.hidden = false;
    this.draw(card, job);
    if (!TERMINAL.has(job.status)) {
      let wasRunning = true;
      this.stops.push(followJob(job.id, (j) => {
        this.draw(card, j);
        if (TERMINAL.has(j.status) && wasRunning) { wasRunning = false; if (this.onFinished) this.onFinished(j); }
      }));
    }
  }

  draw(card, job) {
    const pct = Math.round(100 * (job.progress ?? 0));
    const kind = job.status === "completed" ? "ok" : job.status === "failed" ? "error" : TERMINAL.has(job.status) ? "neutral" : "busy";
    const errors = (job.errors || []).slice(0, 3);
    mount(card,
      h("div", { class: "row between" },
        h("div", {}, h("strong", {}, KIND_LABEL[job.kind] || job.kind, " #", job.id),
          job.model_version ? h("div", { class: "muted mono small" }, job.model_version) : null),
        h("div", { class: "row" }, badge(job.status, kind),
          TERMINAL.has(job.status)
            ? h("button", { class: "btn btn-ghost small", type: "button", "aria-label": `Dismiss job ${job.id}`, onclick: () => { hide(job.id); card.remove(); this.cards.delete(job.id); if (!this.cards.size) this.el.hidden = true; } }, "✕")
            : h("button", { class: "btn small", type: "button", onclick: async () => { try { this.draw(card, await api(`/api/jobs/${job.id}/cancel`, { method: "POST" })); } catch (err) { toast(err.message, "error"); } } }, "Cancel"))),
      h("div", { class: "job-bar" }, h("progress", { max: 100, value: pct, "aria-label": `Job ${job.id} progress` }), h("span", { class: "pct", "data-testid": "job-percent" }, `${pct}%`)),
      this.stats(job),
      job.error ? h("div", { class: "alert alert-error" }, job.error) : null,
      silentModel(job) ? h("p", { class: "muted small", "data-testid": "job-hint" },
        "The model answered with no prediction for these tasks. Many models stay silent until they have learned from a few annotations (the example backend needs two labels): label some tasks, then retrieve again.") : null,
      errors.length ? h("ul", { class: "job-errors" }, errors.map((e) => h("li", {}, e.task ? `Task ${e.task}: ` : "", e.message || JSON.stringify(e)))) : null);
  }

  // Counts that mean something for the job's kind: a training run has none (its status and error say it
  // all); only a prediction job has predicted / skipped / failed tasks.
  stats(job) {
    if (job.kind === "train") return null;
    const predict = job.kind === "predict";
    return h("div", { class: "job-stats muted" },
      h("span", {}, `${fmtNumber(job.done)} / ${fmtNumber(job.total)} done`),
      predict ? h("span", {}, `${fmtNumber(job.predicted)} predicted`) : null,
      predict ? h("span", {}, `${fmtNumber(job.skipped)} skipped`) : null,
      predict || job.failed ? h("span", { class: job.failed ? "bad" : "" }, `${fmtNumber(job.failed)} failed`) : null,
      job.rate ? h("span", {}, `${job.rate.toFixed(1)} tasks/s`) : null,
      !TERMINAL.has(job.status) && job.eta_s !== null && job.eta_s !== undefined ? h("span", {}, `ETA ${fmtDuration(job.eta_s)}`) : null);
  }

  stop() { this.stops.forEach((s) => s()); }
}
