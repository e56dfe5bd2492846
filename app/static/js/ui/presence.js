/**
 * ui/presence.js — who is online and who is typing, from `presence` and `typing` frames (and, where
 * the server offers it, a snapshot per conversation when one is opened).
 */
const TYPING_TTL_MS = 6000; // a typing signal not repeated within this long has stopped

export class Presence {
  constructor(client) {
    this.client = client;
    this.online = new Set();
    this.typing = new Map(); // conversation id -> Map(user id -> expires at)
    this.listeners = new Set();
    client.on("presence", (f) => {
      if (f.status === "online") this.online.add(f.user_id); else this.online.delete(f.user_id);
      this.changed();
    });
    client.on("typing", (f) => {
      if (f.user_id === client.user?.id) return;
      const room = this.typing.get(f.conversation_id) ?? new Map();
      this.typing.set(f.conversation_id, room);
      if (f.active) room.set(f.user_id, Date.now() + TYPING_TTL_MS); else room.delete(f.user_id);
      this.changed();
      if (f.active) setTimeout(() => this.changed(), TYPING_TTL_MS + 50);
    });
    // Someone who just sent a message has stopped typing, and is online.
    client.on("message", (m) => {
      if (!m.sender_id) return;
      this.typing.get(m.conversation_id)?.delete(m.sender_id);
      if (!this.online.has(m.sender_id)) { this.online.add(m.sender_id); }
      this.changed();
    });
  }

  /** Ask the server who of a conversation's members is online (a server without it: frames only). */
  async snapshot(conversationId) {
    try {
      const res = await this.client.api("GET", `/api/conversations/${conversationId}/presence`);
      for (const id of res.online ?? []) this.online.add(id);
      this.changed();
    } catch { /* not offered: rely on presence frames */ }
  }

  typingIn(conversationId) {
    const now = Date.now();
    return [...(this.typing.get(conversationId) ?? [])].filter(([, until]) => until > now).map(([id]) => id);
  }

  isOnline(userId) { return userId === this.client.user?.id || this.online.has(userId); }

  onChange(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  changed() { for (const fn of this.listeners) fn(); }
}
