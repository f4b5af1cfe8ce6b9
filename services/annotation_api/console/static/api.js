// The REST client: every call carries the API token kept in localStorage.
const TOKEN_KEY = "labelloop.token";

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function errorText(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && body.detail) return JSON.stringify(body.detail);
  return `HTTP ${status}`;
}

export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { Authorization: `Token ${token.get() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && !path.endsWith("/whoami")) window.dispatchEvent(new CustomEvent("labelloop:unauthorized"));
  if (raw) return res;
  const text = res.status === 204 ? "" : await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text.slice(0, 300) }; }
  if (!res.ok) throw new ApiError(res.status, errorText(data, res.status), data);
  return data;
}

export const TERMINAL = new Set(["completed", "failed", "cancelled", "canceled"]);

// Follows a job: server-sent events read with fetch (EventSource cannot send the token header);
// falls back to polling GET /api/jobs/{id} when the stream is missing or breaks.
export function followJob(jobId, onUpdate) {
  const controller = new AbortController();
  let stopped = false;
  const stop = () => { stopped = true; controller.abort(); };
  const poll = async () => {
    while (!stopped) {
      try {
        const job = await api(`/api/jobs/${jobId}`, { signal: controller.signal });
        onUpdate(job);
        if (TERMINAL.has(job.status)) return;
      } catch (err) {
        if (stopped) return;
      }
      await new Promise((r) => setTimeout(r, 700));
    }
  };
  (async () => {
    try {
      const res = await api(`/api/jobs/${jobId}/events`, { raw: true, signal: controller.signal });
      if (!res.ok || !(res.headers.get("content-type") || "").includes("text/event-stream")) throw new Error("no stream");
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let last = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (data) { last = JSON.parse(data); onUpdate(last); }
        }
      }
      if (!last || !TERMINAL.has(last.status)) await poll();
    } catch (err) {
      if (!stopped) await poll();
    }
  })();
  return stop;
}
