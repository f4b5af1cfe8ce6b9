// Sign in with an API token (the one `make run` prints); it is kept in localStorage.
import { signedIn, go } from "../app.js";
import { token } from "../api.js";
import { h, mount, field } from "../ui.js";

export function render(view) {
  const input = h("input", { type: "password", name: "token", required: true, autocomplete: "current-password", placeholder: "40-character token", spellcheck: "false" });
  const error = h("div", { class: "alert alert-error", role: "alert", hidden: true });
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      await signedIn(input.value.trim());
      go("#/projects");
    } catch (err) {
      token.clear();
      error.textContent = err.status === 401 ? "This token was not accepted. Use the API token `make run` printed." : err.message;
      error.hidden = false;
    }
  } },
    h("div", { class: "signin-brand" }, h("span", { class: "logo big", "aria-hidden": "true" }), h("h1", {}, "labelloop")),
    h("p", { class: "muted" }, "ML-assisted labeling: connect a model, pre-label, label, train, repeat."),
    field("API token", input, "Printed by `make run` as “API token”."),
    error,
    h("button", { class: "btn btn-primary wide", type: "submit" }, "Sign in"));
  mount(view, h("div", { class: "center" }, form));
  input.focus();
}
