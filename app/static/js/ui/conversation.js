/**
 * ui/conversation.js — the open conversation: a window of its history (paged, so a conversation of
 * any length opens with one page of DOM), live messages appended in seq order, the assistant's
 * answer streaming in, the composer with its offline queue, typing, people online, mark-as-read by
 * reading.
 *
 * The window rule: messages are shown in seq order without holes. A live message that is the next
 * seq is appended; one further ahead means something is missing, and the gap is fetched over REST
 * first. A window that does not reach the end (after a jump to a search hit) takes no live messages
 * and offers "Jump to latest" instead.
 */
import { h, mount, announce, perFrame } from "../dom.js";
import { messageElement, pendingElement, markPending, streamElement, updateStream, addNote } from "./messages.js";
import { addPeopleDialog, assistantDialog } from "./dialogs.js";

const PAGE = 50;
const MAX_DOM_MESSAGES = 400; // past this, the oldest rows leave the DOM (they page back in on scroll)
const TYPING_REPEAT_MS = 3000;
const TYPING_IDLE_MS = 4000;

export class ConversationView {
  constructor(client, me, { sidebar, presence }) {
    this.client = client;
    this.me = me;
    this.sidebar = sidebar;
    this.presence = presence;
    this.c = null;
    client.on("message", (m) => { if (m.conversation_id === this.c?.id) this._onLive(m); });
    client.on("queue", () => this._syncPending());
    client.on("ack", (a) => this._onAck(a));
    client.on("failed", ({ item, error }) => this._onFailed(item, error));
    client.on("stream", (f) => { if (f.conversation_id === this.c?.id) this._onStream(f); });
    client.on("stream_end", (f) => { if (f.conversation_id === this.c?.id) this._onStreamEnd(f); });
    presence.onChange(perFrame(() => this._renderPresence()));
  }

  close() {
    this.observer?.disconnect();
    this.c = null;
  }

  async open(pane, id, jumpSeq) {
    this.close();
    // Live messages wait in `early` until the first page is shown, then go through the window rule.
    const c = { id, msgs: [], early: [], hasOlder: false, hasNewer: false, loading: false, streams: new Map(), notes: new Map(), finished: new Set() };
    this.c = c;
    const details = await this.client.api("GET", `/api/conversations/${id}`);
    if (this.c !== c) return;
    c.details = details;
    c.names = new Map(details.participants.map((p) => [p.user_id, p.name]));
    c.readSeq = details.participants.find((p) => p.user_id === this.me.id)?.last_read_seq ?? 0;
    this.sidebar.upsert({ id, title: details.title, updated_at: details.updated_at });
    this._build(pane);
    this.presence.snapshot(id);
    const page = jumpSeq
      ? await this.client.api("GET", `/api/conversations/${id}/messages?after_seq=${Math.max(0, jumpSeq - 20)}&limit=${PAGE}`)
      : await this.client.api("GET", `/api/conversations/${id}/messages?before_seq=${details.last_seq + 1}&limit=${PAGE}`);
    if (this.c !== c) return;
    c.hasOlder = jumpSeq ? page.items.length > 0 && page.items[0].seq > 1 : page.has_more;
    c.hasNewer = jumpSeq ? page.has_more : false;
    c.base = jumpSeq ? Math.max(0, jumpSeq - 20) : Math.max(0, details.last_seq - page.items.length);
    this._append(page.items);
    const early = c.early;
    c.early = null;
    early.forEach((m) => this._onLive(m));
    for (const r of this.client.streaming(id)) this._onStream({ ...r, delta: "" });
    this._syncPending();
    this._renderPresence();
    this._renderEdges();
    if (jumpSeq) {
      const hit = this.history.querySelector(`[data-seq="${jumpSeq}"]`);
      hit?.classList.add("highlight");
      hit?.scrollIntoView({ block: "center" });
      hit?.setAttribute("tabindex", "-1");
      hit?.focus({ preventScroll: true });
    } else {
      this._scrollToEnd();
      this.input.focus({ preventScroll: true });
    }
    performance.mark("parley:conversation-ready"); // the chat view is usable: history shown, composer live
  }

  // -- layout ---------------------------------------------------------------------------------------

  _build(pane) {
    const c = this.c;
    this.title = h("h2", { id: "conv-title" }, c.details.title);
    this.people = h("ul", { class: "people", "aria-label": "People" });
    this.assistantButton = h("button", { type: "button", "aria-label": "Assistant settings",
      onclick: () => assistantDialog(this.client, c.details, (u) => { c.details = u; this._renderHead(); }) });
    this.olderButton = h("button", { type: "button", class: "load-older", onclick: () => this._loadOlder() }, "Load older messages");
    this.list = h("div", { class: "messages" });
    this.streamBox = h("div", {});
    this.pendingBox = h("div", {});
    this.newerButton = h("button", { type: "button", class: "jump-latest", onclick: () => { location.hash = `#/c/${c.id}`; } }, "Jump to latest");
    this.history = h("section", { class: "history", role: "log", "aria-label": "Messages", tabindex: "0" },
      this.olderButton, this.list, this.streamBox, this.pendingBox, this.newerButton);
    this.history.addEventListener("scroll", () => this._onScroll());
    this.typingLine = h("div", { class: "typing", "aria-live": "polite" });
    this.input = h("textarea", { "aria-label": "Message", placeholder: "Write a message… (Shift+Enter: new line)", rows: 1, maxlength: 4000 });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); this._submit(); }
    });
    this.input.addEventListener("input", () => this._typed());
    this.stopButton = h("button", { type: "button", class: "danger", hidden: true, onclick: () => this._stop() }, "Stop");
    const composer = h("form", { class: "composer", "aria-label": "Send a message", onsubmit: (ev) => { ev.preventDefault(); this._submit(); } },
      this.input, this.stopButton, h("button", { type: "submit", class: "primary" }, "Send"));
    const head = h("div", { class: "conv-head" },
      h("a", { href: "#/", class: "back", "aria-label": "Back to conversations" }, "←"),
      this.title, this.people,
      h("button", { type: "button", onclick: () => addPeopleDialog(this.client, c.id, () => this._reloadDetails()) }, "Add people"),
      this.assistantButton);
    mount(pane, head, this.history, this.typingLine, composer);
    this.observer = new IntersectionObserver((entries) => this._seen(entries), { root: this.history, threshold: 0.5 });
    this._renderHead();
  }

  _renderHead() {
    const a = this.c.details.assistant;
    this.title.textContent = this.c.details.title;
    this.assistantButton.textContent = a?.enabled ? `Assistant: on${a.model ? ` (${a.model})` : ""}` : "Assistant: off";
  }

  async _reloadDetails() {
    const c = this.c;
    const details = await this.client.api("GET", `/api/conversations/${c.id}`);
    if (this.c !== c) return;
    c.details = details;
    c.names = new Map(details.participants.map((p) => [p.user_id, p.name]));
    this._renderHead();
    this._renderPresence();
    this.presence.snapshot(c.id);
  }

  _renderPresence() {
    const c = this.c;
    if (!c?.details || !this.people) return;
    mount(this.people, c.details.participants.map((p) => {
      const online = this.presence.isOnline(p.user_id);
      return h("li", { dataset: { online: String(online), userId: p.user_id } },
        p.user_id === this.me.id ? `${p.name} (you)` : p.name, h("span", { class: "visually-hidden" }, online ? " online" : " offline"));
    }));
    const names = this.presence.typingIn(c.id).map((id) => c.names.get(id) ?? "Someone");
    this.typingLine.textContent = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(" and ")} are typing…`;
  }

  _renderEdges() {
    this.olderButton.hidden = !this.c.hasOlder;
    this.newerButton.hidden = !this.c.hasNewer;
  }

  // -- the window of history ----------------------------------------------------------------------------

  _nameOf(id) { return this.c.names.get(id) ?? "Someone"; }

  _last() { return this.c.msgs.at(-1)?.seq ?? this.c.base ?? 0; }

  _append(messages) {
    const c = this.c;
    const stick = this._atBottom();
    for (const m of messages) {
      if (m.seq <= this._last()) continue;
      c.msgs.push(m);
      const el = messageElement(m, { me: this.me, nameOf: (id) => this._nameOf(id) });
      this.list.append(el);
      this.observer.observe(el);
      if (m.client_msg_id) this.pendingBox.querySelector(`[data-client-msg-id="${CSS.escape(m.client_msg_id)}"]`)?.remove();
      if (m.role === "assistant") this._finalised(m, el);
      if (m.sender_id && m.sender_id !== this.me.id) announce(`${this._nameOf(m.sender_id)}: ${m.text.slice(0, 120)}`);
    }
    if (stick && c.msgs.length > MAX_DOM_MESSAGES) this._trimTop(c.msgs.length - MAX_DOM_MESSAGES);
    if (stick) this._scrollToEnd();
  }

  _trimTop(count) {
    const c = this.c;
    const gone = c.msgs.splice(0, count);
    for (const m of gone) this.list.querySelector(`[data-seq="${m.seq}"]`)?.remove();
    c.hasOlder = true;
    this._renderEdges();
  }

  _onLive(m) {
    const c = this.c;
    if (c.early) return void c.early.push(m);
    if (c.hasNewer || m.seq <= this._last()) return;
    if (m.seq === this._last() + 1) this._append([m]);
    else this._loadNewer(true);
  }

  async _loadOlder() {
    const c = this.c;
    if (c.loading || !c.hasOlder) return;
    c.loading = true;
    try {
      const first = c.msgs[0]?.seq ?? c.base + 1;
      const page = await this.client.api("GET", `/api/conversations/${c.id}/messages?before_seq=${first}&limit=${PAGE}`);
      if (this.c !== c) return;
      const before = this.history.scrollHeight;
      const els = page.items.map((m) => messageElement(m, { me: this.me, nameOf: (id) => this._nameOf(id) }));
      this.list.prepend(...els);
      els.forEach((el) => this.observer.observe(el));
      c.msgs.unshift(...page.items);
      c.hasOlder = page.has_more;
      this.history.scrollTop += this.history.scrollHeight - before;
      this._renderEdges();
    } finally {
      c.loading = false;
    }
  }

  async _loadNewer(all) {
    const c = this.c;
    if (c.loading) return;
    c.loading = true;
    try {
      let more = true;
      while (more && this.c === c) {
        const page = await this.client.api("GET", `/api/conversations/${c.id}/messages?after_seq=${this._last()}&limit=${PAGE * 2}`);
        if (this.c !== c) return;
        this._append(page.items);
        more = page.has_more;
        c.hasNewer = more && !all;
        if (!all) break;
      }
      this._renderEdges();
    } finally {
      c.loading = false;
    }
  }

  _onScroll() {
    const el = this.history;
    if (el.scrollTop < 80 && this.c.hasOlder) this._loadOlder();
    if (this.c.hasNewer && el.scrollHeight - el.scrollTop - el.clientHeight < 80) this._loadNewer(false);
  }

  _atBottom() {
    const el = this.history;
    return !el || el.scrollHeight - el.scrollTop - el.clientHeight < 120;
  }

  _scrollToEnd() { this.history.scrollTop = this.history.scrollHeight; }

  // -- reading ----------------------------------------------------------------------------------------------

  _seen(entries) {
    const c = this.c;
    if (!c) return;
    for (const e of entries) {
      if (e.isIntersecting) c.visibleMax = Math.max(c.visibleMax ?? 0, Number(e.target.dataset.seq));
    }
    clearTimeout(c.readTimer);
    c.readTimer = setTimeout(() => this._markRead(), 250);
  }

  _markRead() {
    const c = this.c;
    if (!c || document.visibilityState !== "visible" || !(c.visibleMax > c.readSeq)) return;
    c.readSeq = c.visibleMax;
    this.client.markRead(c.id, c.readSeq);
    this.sidebar.markRead(c.id, c.readSeq);
  }

  // -- sending ----------------------------------------------------------------------------------------------

  _submit() {
    const c = this.c;
    const text = this.input.value.trim();
    if (!c || !text) return;
    this.client.send(c.id, text);
    this.input.value = "";
    this._stopTyping();
    if (c.hasNewer) location.hash = `#/c/${c.id}`;
    this._scrollToEnd();
  }

  _typed() {
    const c = this.c;
    const now = Date.now();
    if (now - (this.typingSentAt ?? 0) > TYPING_REPEAT_MS) {
      this.client.typing(c.id, true);
      this.typingSentAt = now;
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this._stopTyping(), TYPING_IDLE_MS);
  }

  _stopTyping() {
    clearTimeout(this.typingTimer);
    if (this.typingSentAt && this.c) this.client.typing(this.c.id, false);
    this.typingSentAt = 0;
  }

  _syncPending() {
    const c = this.c;
    if (!c || !this.pendingBox) return;
    const stick = this._atBottom();
    for (const item of this.client.pending(c.id)) {
      if (!this.pendingBox.querySelector(`[data-client-msg-id="${CSS.escape(item.client_msg_id)}"]`)
        && !this.list.querySelector(`[data-client-msg-id="${CSS.escape(item.client_msg_id)}"]`)) {
        this.pendingBox.append(pendingElement(item));
      }
    }
    if (stick) this._scrollToEnd();
  }

  _onAck(ack) {
    const el = this.pendingBox?.querySelector(`[data-client-msg-id="${CSS.escape(ack.client_msg_id)}"]`);
    if (!el) return;
    if (this.c?.hasNewer) el.remove(); // it will be there when the window reaches the end
    else markPending(el, "sent", "sent");
  }

  _onFailed(item, error) {
    const el = this.pendingBox?.querySelector(`[data-client-msg-id="${CSS.escape(item.client_msg_id)}"]`);
    if (!el) return;
    markPending(el, "failed", `not sent: ${error.message}`);
    el.append(h("button", { type: "button", class: "icon", onclick: () => el.remove() }, "Dismiss"));
  }

  // -- the assistant ----------------------------------------------------------------------------------------

  _onStream(f) {
    const c = this.c;
    if (c.finished.has(f.reply_id)) return;
    let entry = c.streams.get(f.reply_id);
    if (!entry) {
      entry = { el: streamElement(f.reply_id), render: null };
      entry.render = perFrame((text) => { updateStream(entry.el, text); if (this._atBottom()) this._scrollToEnd(); });
      c.streams.set(f.reply_id, entry);
      this.streamBox.append(entry.el);
      this.stopButton.hidden = false;
    }
    entry.text = f.text;
    entry.render(f.text);
  }

  _onStreamEnd(f) {
    const c = this.c;
    const entry = c.streams.get(f.reply_id);
    c.streams.delete(f.reply_id);
    this.stopButton.hidden = c.streams.size === 0;
    const note = f.cancelled ? "Stopped." : f.error ? `The assistant could not finish: ${f.error.message ?? f.error}` : null;
    if (note) announce(note);
    const stored = f.message_id ? this.list.querySelector(`[data-id="${f.message_id}"]`) : null;
    if (stored) {
      entry?.el.remove();
      if (note) addNote(stored, note);
    } else if (f.message_id && !c.hasNewer) {
      c.notes.set(f.message_id, { note, el: entry?.el }); // the stored message is on its way
      if (entry) { entry.el.setAttribute("aria-busy", "false"); if (note) addNote(entry.el, note); }
    } else if (entry) {
      entry.el.setAttribute("aria-busy", "false");
      entry.el.querySelector(".state").textContent = f.cancelled ? "stopped" : "";
      if (note) addNote(entry.el, note);
    }
  }

  /** An assistant message arrived: it replaces the bubble its reply was streamed into. */
  _finalised(m, el) {
    const c = this.c;
    const waiting = c.notes.get(m.id);
    if (waiting) {
      c.notes.delete(m.id);
      waiting.el?.remove();
      if (waiting.note) addNote(el, waiting.note);
      return;
    }
    for (const [replyId, entry] of c.streams) {
      if (m.text.startsWith(entry.text ?? "")) {
        entry.el.remove();
        c.streams.delete(replyId);
        c.finished.add(replyId); // deltas replayed after this (a resume) have nothing left to show
        break;
      }
    }
  }

  _stop() {
    for (const replyId of this.c?.streams.keys() ?? []) this.client.cancel(replyId);
  }
}
