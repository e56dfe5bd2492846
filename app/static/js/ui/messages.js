/**
 * ui/messages.js — one message on screen: stored, being streamed by the assistant, or still waiting
 * in the send queue. Message text is Markdown rendered by markdown.js; names and times are text.
 */
import { h, formatTime } from "../dom.js";
import { renderMarkdown } from "../markdown.js";

function header(name, iso, extra) {
  return h("header", {}, h("strong", {}, name), iso ? h("time", { datetime: iso }, formatTime(iso)) : null, extra);
}

export function messageElement(m, { me, nameOf }) {
  const mine = m.sender_id === me.id;
  const who = m.role === "assistant" ? "Assistant" : m.role === "system" ? "Parley" : mine ? "You" : nameOf(m.sender_id);
  const body = h("div", { class: "body" });
  renderMarkdown(body, m.text);
  return h("article", {
    class: `msg ${mine ? "mine" : ""} ${m.role}`,
    dataset: { seq: String(m.seq), id: m.id, ...(m.client_msg_id ? { clientMsgId: m.client_msg_id } : {}) },
    "aria-label": `${who}, message ${m.seq}`,
  }, header(who, m.created_at), body);
}

export function pendingElement(item) {
  const body = h("div", { class: "body" });
  renderMarkdown(body, item.text);
  return h("article", {
    class: "msg mine pending", dataset: { clientMsgId: item.client_msg_id }, "aria-label": "You, not sent yet",
  }, header("You", null, h("span", { class: "state" }, "waiting to send")), body);
}

export function markPending(el, state, text) {
  el.classList.toggle("pending", state === "waiting");
  el.classList.toggle("failed", state === "failed");
  el.querySelector(".state").textContent = text;
}

export function streamElement(replyId) {
  return h("article", {
    class: "msg assistant streaming", dataset: { replyId }, "aria-busy": "true", "aria-label": "Assistant, answering",
  }, header("Assistant", null, h("span", { class: "state" }, "writing…")), h("div", { class: "body" }));
}

export function updateStream(el, text) {
  renderMarkdown(el.querySelector(".body"), text);
}

/** A line under a message: "Stopped.", or why the assistant could not finish. */
export function addNote(el, text) {
  el.querySelector(".note")?.remove();
  el.append(h("p", { class: "note", role: "status" }, text));
}
