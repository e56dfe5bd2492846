/**
 * ui/dialogs.js — modal forms (<dialog>): start a conversation, add people by email, assistant
 * settings. Each resolves when done; errors from the server are shown in the form.
 */
import { h } from "../dom.js";

/** Models offered in the picker; any other name the server's provider knows can be typed. */
export const SUGGESTED_MODELS = ["offline", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "gpt-4o-mini", "llama3.1"];

function modelPicker(value) {
  const input = h("input", { name: "model", list: "parley-models", value: value ?? "", placeholder: "server default" });
  const list = h("datalist", { id: "parley-models" }, SUGGESTED_MODELS.map((m) => h("option", { value: m })));
  return { input, field: h("label", {}, "Assistant model", input, list) };
}

function emailsOf(text) {
  return text.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
}

/** Open a modal form; `onSubmit(form)` may throw to keep it open with the message shown. */
function modal(title, fields, submitLabel, onSubmit) {
  const error = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
  const dialog = h("dialog", { "aria-label": title });
  const form = h("form", { method: "dialog", onsubmit: async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      await onSubmit();
      dialog.close();
    } catch (err) {
      error.textContent = err.message ?? String(err);
    } finally {
      submit.disabled = false;
    }
  } },
  h("h2", {}, title), fields, error,
  h("div", { class: "actions" }, h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"), submit));
  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

async function addByEmail(client, conversationId, emails) {
  if (emails.length) await client.api("POST", `/api/conversations/${conversationId}/participants`, { emails });
}

export function newConversationDialog(client, onCreated) {
  const title = h("input", { name: "title", required: true, maxlength: 200 });
  const people = h("input", { name: "people", placeholder: "ann@example.com, bob@example.com" });
  const assistant = h("input", { type: "checkbox", name: "assistant" });
  const model = modelPicker(null);
  modal("New conversation", [
    h("label", {}, "Title", title),
    h("label", {}, "Add people (emails)", people),
    h("label", { class: "inline" }, assistant, "Assistant in this conversation"),
    model.field,
  ], "Create", async () => {
    const created = await client.api("POST", "/api/conversations", {
      title: title.value,
      assistant: { enabled: assistant.checked, model: model.input.value.trim() || null },
    });
    onCreated(created);
    location.hash = `#/c/${created.id}`;
    await addByEmail(client, created.id, emailsOf(people.value));
  });
}

export function addPeopleDialog(client, conversationId, onDone) {
  const people = h("input", { name: "people", required: true, placeholder: "ann@example.com" });
  modal("Add people", [h("label", {}, "Emails", people)], "Add", async () => {
    await addByEmail(client, conversationId, emailsOf(people.value));
    onDone();
  });
}

export function assistantDialog(client, conversation, onDone) {
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: conversation.assistant?.enabled ?? false });
  const model = modelPicker(conversation.assistant?.model);
  const prompt = h("textarea", { name: "system_prompt", rows: 3, maxlength: 8000 });
  prompt.value = conversation.assistant?.system_prompt ?? "";
  modal("Assistant", [
    h("label", { class: "inline" }, enabled, "Assistant in this conversation"),
    model.field,
    h("label", {}, "Instructions (system prompt)", prompt),
  ], "Save", async () => {
    const updated = await client.api("PATCH", `/api/conversations/${conversation.id}`, {
      assistant: { enabled: enabled.checked, model: model.input.value.trim() || null, system_prompt: prompt.value.trim() || null },
    });
    onDone(updated);
  });
}
