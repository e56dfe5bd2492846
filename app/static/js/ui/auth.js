/** ui/auth.js — sign in and register (one form, two tabs). */
import { h, mount } from "../dom.js";

export function renderAuth(root, client, themeButton) {
  let mode = "signin";
  const error = h("p", { class: "form-error", role: "alert" });
  const name = h("input", { name: "name", autocomplete: "name", required: true, maxlength: 200 });
  const nameField = h("label", {}, "Name", name);
  const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, minlength: 8 });
  const submit = h("button", { class: "primary", type: "submit" });
  const tabs = ["signin", "register"].map((m) => h("button", {
    type: "button", role: "tab", id: `tab-${m}`, onclick: () => setMode(m),
  }, m === "signin" ? "Sign in" : "Register"));

  function setMode(m) {
    mode = m;
    tabs.forEach((t) => t.setAttribute("aria-selected", String(t.id === `tab-${m}`)));
    nameField.hidden = m !== "register";
    name.required = m === "register";
    password.autocomplete = m === "register" ? "new-password" : "current-password";
    submit.textContent = m === "register" ? "Create account" : "Sign in";
    error.textContent = "";
  }

  const form = h("form", { "aria-label": "Account", onsubmit: async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      if (mode === "register") await client.register({ email: email.value, password: password.value, name: name.value });
      else await client.login({ email: email.value, password: password.value });
    } catch (err) {
      error.textContent = err.message || "That did not work; try again.";
    } finally {
      submit.disabled = false;
    }
  } }, nameField, h("label", {}, "Email", email), h("label", {}, "Password", password), error, submit);

  setMode(mode);
  mount(root, h("div", { class: "auth" },
    h("div", { class: "tabs" }, h("h1", { style: null }, "Parley"), h("span", { class: "spacer" }), themeButton()),
    h("div", { class: "tabs", role: "tablist", "aria-label": "Sign in or register" }, tabs),
    form));
  email.focus();
}
