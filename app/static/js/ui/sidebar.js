/**
 * ui/sidebar.js — the conversation list: last-message previews and unread badges kept live.
 *
 * The server's `conversation` frames (the caller's list changed) are the truth when it sends them;
 * the list also moves on `message` frames of the conversations joined here, and is fetched again
 * after every reconnect (and every few seconds while the server has sent no `conversation` frame,
 * which is how a conversation we were added to appears without them). Every listed conversation is
 * joined live (up to the server's 100 per socket): the list needs what happens next, not history,
 * and the client module rejoins from the last seq it saw after a reconnect.
 */
import { h, mount, formatTime, perFrame } from "../dom.js";
import { newConversationDialog } from "./dialogs.js";

const MAX_JOINED = 100;
/** Without `conversation` frames a conversation someone adds us to shows up on the next fetch. */
const POLL_MS = 5000;
const PREVIEW_CHARS = 140;

export class Sidebar {
  constructor(client, me) {
    this.client = client;
    this.me = me;
    this.items = new Map(); // id -> summary
    this.selected = null;
    this.list = h("ul", { class: "conv-list", "aria-label": "Conversations" });
    this.el = h("nav", { class: "sidebar", "aria-label": "Conversations" },
      h("div", { class: "sidebar-head" },
        h("button", { type: "button", class: "primary", onclick: () => newConversationDialog(client, (c) => this.upsert(c)) }, "New conversation")),
      this.list);
    this.render = perFrame(() => this._render());
    client.on("message", (m) => this._onMessage(m));
    client.on("conversation", (f) => this._onConversation(f));
    client.on("read", (f) => this._onRead(f));
    client.on("left", (f) => { this.items.delete(f.conversation_id); this.render(); });
    client.on("state", (s) => { if (s === "open" && this.loaded) this.load(); });
    this.poll = setInterval(() => {
      if (!this.serverSendsListChanges && client.state === "open" && document.visibilityState === "visible") this.load();
    }, POLL_MS);
  }

  async load() {
    const page = await this.client.api("GET", `/api/conversations?limit=${MAX_JOINED}`);
    if (this.selected && this.items.has(this.selected)) {
      // The open conversation is read as it arrives; a list fetched meanwhile may not know yet.
      const open = page.items.find((c) => c.id === this.selected);
      if (open) open.unread_count = Math.min(open.unread_count, this.items.get(this.selected).unread_count);
    }
    this.items = new Map(page.items.map((c) => [c.id, c]));
    this.loaded = true;
    for (const c of page.items) {
      if (!this.client.rooms.has(c.id)) this.client.join(c.id);
    }
    this.render();
  }

  select(id) {
    this.selected = id;
    this.render();
  }

  /**
   * The conversation was read up to `seq` (here or on another device). Read cursors only move
   * forward, and an echo of an older `read` can arrive after a newer message: keep the furthest.
   */
  markRead(id, seq) {
    const c = this.items.get(id);
    if (!c) return;
    c.read_seq = Math.max(c.read_seq ?? 0, seq);
    const unread = Math.max(0, (c.last_message?.seq ?? 0) - c.read_seq);
    if (unread < c.unread_count) { c.unread_count = unread; this.render(); }
  }

  /** Add or update a conversation (joined live if it was not). */
  upsert(conversation) {
    const known = this.items.get(conversation.id);
    const { id, title, last_message, unread_count, updated_at, read_seq } = { ...known, ...conversation };
    this.items.set(id, { id, title, last_message: last_message ?? null, unread_count: unread_count ?? 0, updated_at, read_seq });
    if (this.client.lastSeq(id) == null && !this.client.rooms.has(id)) this.client.join(id);
    this.render();
  }

  _onMessage(m) {
    const c = this.items.get(m.conversation_id);
    if (!c) return;
    if (c.last_message && m.seq <= c.last_message.seq) return;
    c.last_message = { seq: m.seq, preview: m.text.slice(0, PREVIEW_CHARS), sender_id: m.sender_id, role: m.role, created_at: m.created_at };
    c.updated_at = m.created_at;
    if (m.sender_id !== this.me.id) c.unread_count = (c.unread_count ?? 0) + 1;
    else { c.read_seq = m.seq; c.unread_count = 0; } // posting moves your read cursor to your message
    this.render();
  }

  _onConversation(f) {
    this.serverSendsListChanges = true;
    if (f.removed) {
      this.items.delete(f.id);
      this.client.leave(f.id);
      return this.render();
    }
    const fresh = !this.items.has(f.id);
    this.upsert(f);
    if (fresh && !f.title) this.load(); // a conversation we were just added to: get its title
  }

  _onRead(f) {
    if (f.user_id === this.me.id) this.markRead(f.conversation_id, f.seq);
  }

  _render() {
    const sorted = [...this.items.values()].sort((a, b) => (b.updated_at ?? "").localeCompare(a.updated_at ?? ""));
    if (!sorted.length) {
      mount(this.list, h("li", { class: "empty" }, "No conversations yet."));
      return;
    }
    mount(this.list, sorted.map((c) => {
      const unread = c.unread_count ?? 0;
      const label = `${c.title}${unread ? `, ${unread} unread` : ""}`;
      return h("li", { dataset: { id: c.id } },
        h("a", { href: `#/c/${c.id}`, "aria-current": c.id === this.selected ? "page" : null, "aria-label": label },
          h("span", { class: "title" }, c.title),
          c.last_message ? h("time", { datetime: c.last_message.created_at }, formatTime(c.last_message.created_at)) : h("span"),
          h("span", { class: "preview" }, c.last_message ? c.last_message.preview : "No messages yet"),
          unread ? h("span", { class: "badge", "aria-hidden": "true" }, unread > 99 ? "99+" : String(unread)) : h("span")));
    }));
  }
}
