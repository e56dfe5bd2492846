/**
 * parley-client.js — the one module that talks to a Parley server: REST with token refresh, and the
 * WebSocket with everything a chat client needs to never lose or double a message.
 *
 * It has no UI and no dependency; browsers load it as an ES module, Node 20 imports it as is (pass
 * `WebSocket`, `fetch` and `storage`). Documented in docs/client.md.
 *
 * The socket rules, in one place:
 * - connect with a single-use ticket (POST /api/auth/ws-ticket, then /ws?ticket=…);
 * - reconnect with exponential backoff and full jitter, so a restarted node is not hit by every
 *   client at the same instant;
 * - heartbeat: a `ping` every `heartbeatMs`; no frame for two periods means the link is dead;
 * - every joined conversation remembers the last seq it delivered; a reconnect joins with
 *   `after_seq`, and the server replays the gap; a seq already seen is dropped (never shown twice);
 * - sends go through a queue persisted in `storage` and are sent again with their original
 *   `client_msg_id` until acked (the server stores one message per id, so resending is safe);
 * - assistant replies are tracked by delta index; a reconnect (or a gap) asks `resume` from the
 *   first index not yet seen;
 * - the access token is refreshed before it expires (REST, then a `refresh` frame on the socket).
 */

/** Error codes after which resending the same `client_msg_id` later can succeed. */
const RETRYABLE = new Set(["UNAVAILABLE", "RATE_LIMITED", "INTERNAL"]);
/** Close codes after which reconnecting is pointless without the user doing something. */
const FATAL_CLOSE = new Set([4403, 1008]);
/** Ended replies remembered so late deltas of a finished answer are not taken for a new one. */
const ENDED_MEMORY = 200;

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** A `storage` for environments without localStorage (Node, private windows that refuse it). */
export class MemoryStorage {
  constructor() { this.map = new Map(); }
  getItem(key) { return this.map.has(key) ? this.map.get(key) : null; }
  setItem(key, value) { this.map.set(key, String(value)); }
  removeItem(key) { this.map.delete(key); }
}

function newId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

export class ParleyClient {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] server origin, e.g. "https://chat.example.com" (default: the page's)
   * @param {Storage} [options.storage] where the session and the send queue live (default: localStorage)
   * @param {typeof WebSocket} [options.WebSocket]
   * @param {typeof fetch} [options.fetch]
   * @param {number} [options.heartbeatMs] ping period (default 20 s)
   * @param {number} [options.backoffBaseMs] first reconnect delay ceiling (default 500 ms)
   * @param {number} [options.backoffMaxMs] largest reconnect delay (default 15 s)
   * @param {() => number} [options.random] for tests: Math.random
   * @param {() => number} [options.now] for tests: Date.now
   */
  constructor(options = {}) {
    const g = globalThis;
    this.baseUrl = (options.baseUrl ?? g.location?.origin ?? "").replace(/\/$/, "");
    this.storage = options.storage ?? g.localStorage ?? new MemoryStorage();
    this.WebSocket = options.WebSocket ?? g.WebSocket;
    this.fetch = options.fetch ?? g.fetch.bind(g);
    this.heartbeatMs = options.heartbeatMs ?? 20_000;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 15_000;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.locks = options.locks ?? g.navigator?.locks ?? null;

    this.listeners = new Map();
    this.session = this._load("parley.session");
    this.state = "offline"; // offline | connecting | open | reconnecting
    this.ws = null;
    this.generation = 0; // one per socket opened; a queued send remembers the socket it went out on
    this.wanted = false; // connect() called and not disconnect()
    this.attempts = 0;
    this.timers = { reconnect: null, heartbeat: null, refresh: null };
    this.lastFrameAt = 0;
    this.rooms = new Map(); // conversation id -> { lastSeq: number | null }
    this.replies = new Map(); // reply id -> { conversationId, text, next, resumeAskedAt }
    this.ended = new Set();
    this.refreshing = null;
    this.supportsRefreshFrame = true;
  }

  // -- events --------------------------------------------------------------------------------------

  /** Subscribe to an event; returns the function that unsubscribes. Events: see docs/client.md. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, detail) {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try { fn(detail); } catch (err) { console.error(`parley-client: a '${type}' listener failed`, err); }
    }
  }

  // -- session and REST ------------------------------------------------------------------------------

  get user() { return this.session?.user ?? null; }

  async register({ email, password, name }) {
    return this._startSession(await this._request("POST", "/api/auth/register", { email, password, name }, false));
  }

  async login({ email, password }) {
    return this._startSession(await this._request("POST", "/api/auth/login", { email, password }, false));
  }

  async logout() {
    const session = this.session;
    this.disconnect();
    if (session) {
      await this._request("POST", "/api/auth/logout", { refresh_token: session.refresh_token }).catch(() => {});
    }
    this._endSession();
  }

  /** An authenticated REST call: JSON in, JSON out; an `ApiError` for every non-2xx answer. */
  async api(method, path, body) {
    return this._request(method, path, body, true);
  }

  async _request(method, path, body, auth = true, retried = false) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (auth && this.session) headers.authorization = `Bearer ${this.session.access_token}`;
    const res = await this.fetch(this.baseUrl + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401 && auth && this.session && !retried) {
      await this.refreshTokens();
      return this._request(method, path, body, auth, true);
    }
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const e = data?.error ?? {};
      throw new ApiError(res.status, e.code ?? "HTTP_" + res.status, e.message ?? res.statusText, e.details);
    }
    return data;
  }

  _startSession(auth) {
    this.session = {
      user: auth.user, access_token: auth.access_token, refresh_token: auth.refresh_token,
      expires_at: this.now() + auth.expires_in * 1000,
    };
    this._save("parley.session", this.session);
    this.emit("session", this.session.user);
    return auth.user;
  }

  _endSession() {
    this.disconnect();
    this.session = null;
    this.storage.removeItem("parley.session");
    this.emit("signedout", null);
  }

  /**
   * Swap the refresh token for a new pair, once at a time. Rotation means a refresh token works
   * once and reuse ends the whole login, so concurrent callers (and other tabs, through a Web Lock
   * and the shared storage) wait for the one refresh in flight instead of starting their own.
   */
  async refreshTokens() {
    if (!this.refreshing) {
      const run = () => this._refreshOnce();
      this.refreshing = (this.locks ? this.locks.request("parley-refresh", run) : run())
        .finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  async _refreshOnce() {
    const stored = this._load("parley.session");
    if (stored && this.session && stored.refresh_token !== this.session.refresh_token) {
      this.session = stored; // another tab refreshed already
      return;
    }
    if (!this.session) throw new ApiError(401, "UNAUTHORIZED", "signed out");
    let pair;
    try {
      pair = await this._request("POST", "/api/auth/refresh", { refresh_token: this.session.refresh_token }, false);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 400)) this._endSession();
      throw err;
    }
    this.session = { ...this.session, ...pair, expires_at: this.now() + pair.expires_in * 1000 };
    delete this.session.token_type;
    this._save("parley.session", this.session);
    this._scheduleRefresh();
    if (this.state === "open" && this.supportsRefreshFrame) {
      this._transmit({ type: "refresh", access_token: this.session.access_token });
    }
  }

  // -- the socket ------------------------------------------------------------------------------------

  /** Open the socket and keep it open (reconnecting as needed) until `disconnect()`. */
  connect() {
    if (this.wanted) return;
    this.wanted = true;
    this.outbox = this._loadOutbox();
    this._open();
    globalThis.addEventListener?.("online", this._onBrowserOnline ??= () => this.reconnectNow());
  }

  disconnect() {
    this.wanted = false;
    for (const name of Object.keys(this.timers)) this._clear(name);
    globalThis.removeEventListener?.("online", this._onBrowserOnline);
    if (this.ws) this._drop(this.ws, 1000);
    this._setState("offline");
  }

  /** Skip the backoff wait (the browser says the network is back, or the user asked). */
  reconnectNow() {
    if (!this.wanted || this.state === "open" || this.state === "connecting") return;
    this._clear("reconnect");
    this.attempts = 0;
    this._open();
  }

  async _open() {
    this._setState("connecting");
    let ticket;
    try {
      ticket = (await this.api("POST", "/api/auth/ws-ticket")).ticket;
    } catch (err) {
      if (this.session && this.wanted) this._scheduleReconnect();
      return;
    }
    if (!this.wanted) return;
    const url = this.baseUrl.replace(/^http/, "ws") + "/ws?ticket=" + encodeURIComponent(ticket);
    const ws = new this.WebSocket(url);
    this.ws = ws;
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (ev) => { if (ws === this.ws) this._onFrame(ev.data); };
    ws.onclose = (ev) => { if (ws === this.ws) this._onClose(ev.code, ev.reason); };
    ws.onerror = () => {}; // a close event follows; that is where we act
  }

  _onOpen(ws) {
    if (ws !== this.ws) return;
    for (const room of this.rooms.values()) room.resyncing = false;
    this.generation += 1;
    this.attempts = 0;
    this.lastFrameAt = this.now();
    this._setState("open");
    for (const [id, room] of this.rooms) this._sendJoin(id, room);
    for (const [replyId, r] of this.replies) this._resume(replyId, r);
    this._flush();
    this._startHeartbeat();
    this._scheduleRefresh();
  }

  async _onClose(code, reason) {
    this.ws = null;
    this._clear("heartbeat");
    this.emit("close", { code, reason });
    if (!this.wanted) return this._setState("offline");
    if (FATAL_CLOSE.has(code)) {
      this.emit("error", { code: "CLOSED", message: reason || `closed with ${code}` });
    }
    if (code === 4401) {
      // The ticket or the token was refused: get a fresh pair (signs out if that fails too).
      try { await this.refreshTokens(); } catch { return; }
    }
    this._scheduleReconnect();
  }

  /** Forget a socket we no longer trust: no more events from it, close it in the background. */
  _drop(ws, code) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(code); } catch { /* already closed */ }
    if (ws === this.ws) this.ws = null;
  }

  _scheduleReconnect() {
    this._setState("reconnecting");
    const ceiling = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** this.attempts);
    const delay = Math.floor(this.random() * ceiling); // "full jitter"
    this.attempts += 1;
    this._clear("reconnect");
    this.timers.reconnect = setTimeout(() => { this.timers.reconnect = null; if (this.wanted) this._open(); }, delay);
    this.emit("reconnecting", { attempt: this.attempts, delay });
  }

  _startHeartbeat() {
    this._clear("heartbeat");
    this.timers.heartbeat = setInterval(() => {
      if (!this.ws || this.state !== "open") return;
      if (this.now() - this.lastFrameAt > 2 * this.heartbeatMs) {
        const dead = this.ws;
        this._drop(dead, 4000);
        this._onClose(4000, "no answer to heartbeat");
        return;
      }
      this._transmit({ type: "ping" });
    }, this.heartbeatMs);
  }

  _scheduleRefresh() {
    this._clear("refresh");
    if (!this.session?.expires_at || !this.wanted) return;
    // A minute early (or at half the lifetime for short tokens), so the socket is never closed for expiry.
    const left = this.session.expires_at - this.now();
    const delay = Math.max(1000, Math.min(left - 60_000, left / 2));
    this.timers.refresh = setTimeout(() => this.refreshTokens().catch(() => {}), delay);
  }

  _clear(name) {
    if (this.timers[name] == null) return;
    clearTimeout(this.timers[name]);
    clearInterval(this.timers[name]);
    this.timers[name] = null;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  _transmit(frame) {
    if (!this.ws || this.state !== "open") return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // -- conversations ------------------------------------------------------------------------------

  /**
   * Receive a conversation's messages. With `afterSeq`, every message after it comes first (the
   * history you loaded ends there); without, delivery starts at the conversation's current end.
   * The client rejoins by itself after every reconnect, from the last seq it delivered.
   */
  join(conversationId, { afterSeq = null } = {}) {
    const room = { lastSeq: afterSeq };
    this.rooms.set(conversationId, room);
    if (this.state === "open") this._sendJoin(conversationId, room);
  }

  leave(conversationId) {
    if (this.rooms.delete(conversationId)) this._transmit({ type: "leave", conversation_id: conversationId });
  }

  /** The last seq delivered for a joined conversation (null until known). */
  lastSeq(conversationId) { return this.rooms.get(conversationId)?.lastSeq ?? null; }

  _sendJoin(conversationId, room) {
    const frame = { type: "join", conversation_id: conversationId };
    if (room.lastSeq != null) frame.after_seq = room.lastSeq;
    this._transmit(frame);
  }

  markRead(conversationId, seq) { this._transmit({ type: "read", conversation_id: conversationId, seq }); }

  typing(conversationId, active) { this._transmit({ type: "typing", conversation_id: conversationId, active }); }

  cancel(replyId) { this._transmit({ type: "cancel", reply_id: replyId }); }

  // -- sending ---------------------------------------------------------------------------------------

  /**
   * Queue a message and send it as soon as the socket is open. Returns the queued item
   * (`client_msg_id`, `conversation_id`, `text`, `queued_at`); an `ack` or a `failed` event follows.
   */
  send(conversationId, text) {
    const item = { client_msg_id: newId(), conversation_id: conversationId, text, queued_at: new Date(this.now()).toISOString() };
    this.outbox ??= this._loadOutbox();
    this.outbox.set(item.client_msg_id, item);
    this._persistOutbox((stored) => { stored[item.client_msg_id] = item; });
    this.emit("queue", this.pending());
    this._sendItem(item);
    return item;
  }

  /** Messages not acked yet, oldest first (optionally of one conversation). */
  pending(conversationId = null) {
    const items = [...(this.outbox ?? this._loadOutbox()).values()];
    return conversationId ? items.filter((i) => i.conversation_id === conversationId) : items;
  }

  _flush() {
    this.outbox = this._mergeOutbox();
    for (const item of this.outbox.values()) this._sendItem(item);
  }

  _sendItem(item) {
    if (item.sentOn === this.generation && this.state === "open") return; // in flight on this socket
    if (this._transmit({ type: "send", conversation_id: item.conversation_id, client_msg_id: item.client_msg_id, text: item.text })) {
      item.sentOn = this.generation;
    }
  }

  _settle(clientMsgId) {
    if (!this.outbox?.has(clientMsgId)) return null;
    const item = this.outbox.get(clientMsgId);
    this.outbox.delete(clientMsgId);
    this._persistOutbox((stored) => { delete stored[clientMsgId]; });
    this.emit("queue", this.pending());
    return item;
  }

  _outboxKey() { return `parley.outbox.${this.user?.id ?? "anonymous"}`; }

  _loadOutbox() {
    const stored = this._load(this._outboxKey()) ?? {};
    return new Map(Object.values(stored).sort((a, b) => a.queued_at.localeCompare(b.queued_at)).map((i) => [i.client_msg_id, i]));
  }

  /** What this tab holds plus what other tabs queued (sending twice is harmless: one row per id). */
  _mergeOutbox() {
    const merged = this._loadOutbox();
    for (const [id, item] of this.outbox ?? []) merged.set(id, item);
    return new Map([...merged.values()].sort((a, b) => a.queued_at.localeCompare(b.queued_at)).map((i) => [i.client_msg_id, i]));
  }

  /** Read, change, write: keeps items other tabs added between our writes. */
  _persistOutbox(change) {
    const stored = this._load(this._outboxKey()) ?? {};
    change(stored);
    const clean = {};
    for (const [id, { client_msg_id, conversation_id, text, queued_at }] of Object.entries(stored)) {
      clean[id] = { client_msg_id, conversation_id, text, queued_at }; // not `sentOn`: that is this socket's
    }
    this._save(this._outboxKey(), clean);
  }

  // -- incoming frames ---------------------------------------------------------------------------------

  _onFrame(raw) {
    this.lastFrameAt = this.now();
    let frame;
    try { frame = JSON.parse(raw); } catch { return; }
    switch (frame.type) {
      case "message": return this._onMessage(frame);
      case "ack": return this._onAck(frame);
      case "joined": return this._onJoined(frame);
      case "stream": return this._onStream(frame);
      case "stream_end": return this._onStreamEnd(frame);
      case "error": return this._onError(frame);
      case "left":
        this.rooms.delete(frame.conversation_id);
        return this.emit("left", frame);
      case "pong": return undefined;
      case "refreshed":
        return this.emit("refreshed", frame);
      default:
        return this.emit(frame.type, frame); // presence, typing, read, conversation, …
    }
  }

  _onJoined(frame) {
    const room = this.rooms.get(frame.conversation_id);
    if (room && room.lastSeq == null) room.lastSeq = frame.last_seq;
    this.emit("joined", frame);
  }

  _onMessage(msg) {
    const room = this.rooms.get(msg.conversation_id);
    if (!room) return;
    if (room.lastSeq != null && msg.seq <= room.lastSeq) return; // seen already
    if (room.lastSeq != null && msg.seq > room.lastSeq + 1) {
      // Never expected (the server fills gaps), but if it happens: ask for the gap once instead of skipping it.
      if (!room.resyncing) this._sendJoin(msg.conversation_id, room);
      room.resyncing = true;
      return;
    }
    room.lastSeq = msg.seq;
    room.resyncing = false;
    if (msg.client_msg_id && msg.sender_id === this.user?.id) this._settle(msg.client_msg_id);
    this.emit("message", msg);
  }

  _onAck(frame) {
    const item = this._settle(frame.client_msg_id);
    this.emit("ack", { ...frame, text: item?.text });
  }

  _onError(frame) {
    const item = frame.ref ? this.outbox?.get(frame.ref) : null;
    if (item && RETRYABLE.has(frame.code)) {
      // Keep it; send it again after a pause (same id: the server keeps one message per id).
      item.sentOn = null;
      setTimeout(() => this._sendItem(item), 500 + this.random() * 1500);
      return this.emit("retrying", { item, error: frame });
    }
    if (item) {
      this._settle(item.client_msg_id);
      return this.emit("failed", { item, error: frame });
    }
    if (frame.code === "VALIDATION" && /refresh/.test(frame.message ?? "")) {
      this.supportsRefreshFrame = false; // an older server: it closes with 4401 at expiry and we reconnect
      return undefined;
    }
    return this.emit("error", frame);
  }

  // -- assistant replies ---------------------------------------------------------------------------------

  _onStream(frame) {
    if (this.ended.has(frame.reply_id)) return;
    const attempt = frame.attempt ?? 1;
    let r = this.replies.get(frame.reply_id);
    if (!r || attempt > r.attempt) {
      // A new reply, or the answer restarted after a worker crash: the new attempt starts from index 0.
      r = { conversationId: frame.conversation_id, attempt, text: "", next: 0, resumeAskedAt: -1 };
      this.replies.set(frame.reply_id, r);
    }
    if (attempt < r.attempt) return; // a late delta of an abandoned attempt
    if (frame.index < r.next) return; // a replayed delta we have
    if (frame.index > r.next) return this._resume(frame.reply_id, r); // joined mid-answer, or a gap
    r.text += frame.delta;
    r.next += 1;
    this.emit("stream", {
      reply_id: frame.reply_id, conversation_id: r.conversationId, attempt, index: frame.index, delta: frame.delta, text: r.text,
    });
  }

  _resume(replyId, r) {
    if (r.resumeAskedAt === r.next && this.state === "open" && r.resumeGeneration === this.generation) return;
    if (this._transmit({ type: "resume", reply_id: replyId, from_index: r.next })) {
      r.resumeAskedAt = r.next;
      r.resumeGeneration = this.generation;
    }
  }

  _onStreamEnd(frame) {
    const r = this.replies.get(frame.reply_id);
    this.replies.delete(frame.reply_id);
    this.ended.add(frame.reply_id);
    if (this.ended.size > ENDED_MEMORY) this.ended.delete(this.ended.values().next().value);
    this.emit("stream_end", { ...frame, text: r?.text ?? "" });
  }

  /** Replies being streamed right now: [{reply_id, conversation_id, text}]. */
  streaming(conversationId = null) {
    return [...this.replies].filter(([, r]) => !conversationId || r.conversationId === conversationId)
      .map(([id, r]) => ({ reply_id: id, conversation_id: r.conversationId, text: r.text }));
  }

  // -- storage -----------------------------------------------------------------------------------------

  _load(key) {
    try { return JSON.parse(this.storage.getItem(key) ?? "null"); } catch { return null; }
  }

  _save(key, value) {
    try { this.storage.setItem(key, JSON.stringify(value)); } catch { /* full or refused: memory only */ }
  }
}
