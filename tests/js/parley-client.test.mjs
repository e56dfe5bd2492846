// The client module on its own (node --test), against a fake socket and a fake REST server that
// behave like Parley's: every promise of docs/client.md checked without a browser or a server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ParleyClient, MemoryStorage } from "../../app/static/js/parley-client.js";

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
async function until(check, what, ms = 2000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

class FakeSocket {
  constructor(url, server) {
    this.url = url;
    this.sent = [];
    this.closed = false;
    server.sockets.push(this);
    setTimeout(() => this.onopen?.(), 0);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code = 1000) { if (!this.closed) { this.closed = true; setTimeout(() => this.onclose?.({ code, reason: "" }), 0); } }
  frame(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
  drop(code = 1006) { this.closed = true; this.onclose?.({ code, reason: "" }); }
  frames(type) { return this.sent.filter((f) => f.type === type); }
}

/** REST as Parley answers it, with knobs: tokens that expire, refreshes counted. */
function fakeServer() {
  const server = { sockets: [], refreshes: 0, tickets: 0, validAccess: new Set(["a0"]), calls: [] };
  server.fetch = async (url, init) => {
    const path = new URL(url).pathname;
    server.calls.push(`${init.method} ${path}`);
    const body = init.body ? JSON.parse(init.body) : null;
    const json = (status, data) => ({ ok: status < 300, status, statusText: "", json: async () => data });
    const auth = (init.headers.authorization ?? "").replace("Bearer ", "");
    if (path === "/api/auth/login") {
      return json(200, { user: { id: "u1", name: "Ann" }, access_token: "a0", refresh_token: "r0", expires_in: 900 });
    }
    if (path === "/api/auth/refresh") {
      server.refreshes += 1;
      await tick(5);
      if (body.refresh_token !== `r${server.refreshes - 1}`) return json(401, { error: { code: "UNAUTHORIZED", message: "reused" } });
      const access = `a${server.refreshes}`;
      server.validAccess = new Set([access]);
      return json(200, { access_token: access, refresh_token: `r${server.refreshes}`, expires_in: 900 });
    }
    if (!server.validAccess.has(auth)) return json(401, { error: { code: "UNAUTHORIZED", message: "expired" } });
    if (path === "/api/auth/ws-ticket") return json(200, { ticket: `t${++server.tickets}`, expires_in: 30 });
    return json(200, { path });
  };
  return server;
}

async function signedIn(options = {}) {
  const server = options.server ?? fakeServer();
  const client = new ParleyClient({
    baseUrl: "http://parley.test", storage: options.storage ?? new MemoryStorage(), fetch: server.fetch,
    WebSocket: class extends FakeSocket { constructor(url) { super(url, server); } },
    backoffBaseMs: 4, backoffMaxMs: 20, heartbeatMs: options.heartbeatMs ?? 60_000, locks: null,
  });
  if (!options.storage) await client.login({ email: "ann@example.com", password: "x" });
  else client.session = client._load("parley.session");
  return { client, server };
}

const last = (server) => server.sockets.at(-1);

test("connects with a single-use ticket, never with the access token in the URL", async () => {
  const { client, server } = await signedIn();
  client.connect();
  await until(() => client.state === "open", "open");
  assert.equal(last(server).url, "ws://parley.test/ws?ticket=t1");
  assert.deepEqual(server.calls.slice(-1), ["POST /api/auth/ws-ticket"]);
  client.disconnect();
});

test("a message sent while offline waits in storage and goes out with the same client_msg_id on connect", async () => {
  const storage = new MemoryStorage();
  const { client, server } = await signedIn({ storage: undefined });
  client.storage = storage;
  const item = client.send("c1", "hello");
  assert.equal(client.pending().length, 1);
  assert.ok(storage.getItem("parley.outbox.u1").includes(item.client_msg_id));
  client.connect();
  await until(() => last(server)?.frames("send").length === 1, "send frame");
  assert.deepEqual(last(server).frames("send")[0], { type: "send", conversation_id: "c1", client_msg_id: item.client_msg_id, text: "hello" });
  last(server).frame({ type: "ack", client_msg_id: item.client_msg_id, status: "accepted", id: "m1", seq: 1, conversation_id: "c1" });
  assert.equal(client.pending().length, 0);
  assert.equal(storage.getItem("parley.outbox.u1"), "{}");
  client.disconnect();
});

test("the queue survives a reload: a new client on the same storage sends what the old one could not", async () => {
  const storage = new MemoryStorage();
  const first = await signedIn();
  first.client.storage = storage;
  first.client._save("parley.session", first.client.session);
  const item = first.client.send("c1", "written before the reload");
  const { client, server } = await signedIn({ storage, server: first.server });
  client.connect();
  await until(() => last(server)?.frames("send").length === 1, "resend after reload");
  assert.equal(last(server).frames("send")[0].client_msg_id, item.client_msg_id);
  client.disconnect();
});

test("after a dropped connection it rejoins from the last seq delivered and resends unacked sends once", async () => {
  const { client, server } = await signedIn();
  const delivered = [];
  client.on("message", (m) => delivered.push(m.seq));
  client.join("c1", { afterSeq: 10 });
  client.connect();
  await until(() => client.state === "open", "open");
  const s1 = last(server);
  assert.deepEqual(s1.frames("join"), [{ type: "join", conversation_id: "c1", after_seq: 10 }]);
  for (const seq of [11, 12]) s1.frame({ type: "message", conversation_id: "c1", seq, text: "x", sender_id: "u2" });
  const unacked = client.send("c1", "in flight when the node died");
  s1.drop(1006);
  await until(() => server.sockets.length === 2 && client.state === "open", "reconnected");
  const s2 = last(server);
  assert.deepEqual(s2.frames("join"), [{ type: "join", conversation_id: "c1", after_seq: 12 }]);
  assert.deepEqual(s2.frames("send").map((f) => f.client_msg_id), [unacked.client_msg_id]);
  // The server replays from 13; an old seq (a relay re-publish) is dropped, not shown twice.
  for (const seq of [12, 13, 14, 14]) s2.frame({ type: "message", conversation_id: "c1", seq, text: "x", sender_id: "u2" });
  s2.frame({ type: "message", conversation_id: "c1", seq: 15, text: "in flight when the node died", sender_id: "u1", client_msg_id: unacked.client_msg_id });
  assert.deepEqual(delivered, [11, 12, 13, 14, 15]);
  assert.equal(client.pending().length, 0, "the message seen in the replay settles the send");
  client.disconnect();
});

test("a seq gap is asked for again instead of skipped", async () => {
  const { client, server } = await signedIn();
  client.join("c1", { afterSeq: 3 });
  client.connect();
  await until(() => client.state === "open", "open");
  last(server).frame({ type: "message", conversation_id: "c1", seq: 6, text: "x" });
  last(server).frame({ type: "message", conversation_id: "c1", seq: 7, text: "x" });
  assert.deepEqual(last(server).frames("join").slice(1), [{ type: "join", conversation_id: "c1", after_seq: 3 }], "asked once");
  assert.equal(client.lastSeq("c1"), 3);
  client.disconnect();
});

test("reconnect delays grow exponentially with full jitter, up to the ceiling", async () => {
  const { client } = await signedIn();
  client.backoffBaseMs = 500;
  client.backoffMaxMs = 15_000;
  client.random = () => 0.999;
  client.wanted = true;
  const delays = [];
  client.on("reconnecting", (r) => delays.push(r.delay));
  for (let i = 0; i < 7; i += 1) client._scheduleReconnect();
  assert.deepEqual(delays, [499, 999, 1998, 3996, 7992, 14985, 14985]);
  client.random = () => 0;
  client._scheduleReconnect();
  assert.equal(delays.at(-1), 0, "full jitter: anywhere from zero");
  client.disconnect();
});

test("a silent connection is declared dead after two heartbeat periods and replaced", async () => {
  const { client, server } = await signedIn({ heartbeatMs: 15 });
  client.connect();
  await until(() => client.state === "open", "open");
  await until(() => last(server).frames("ping").length >= 1, "a ping");
  await until(() => server.sockets.length === 2 && client.state === "open", "a new socket after silence", 3000);
  assert.ok(server.sockets[0].closed);
  client.disconnect();
});

test("assistant deltas: in order once; a gap or a reconnect asks resume from the first missing index", async () => {
  const { client, server } = await signedIn();
  const texts = [];
  let ended = null;
  client.on("stream", (s) => texts.push(s.text));
  client.on("stream_end", (e) => { ended = e; });
  client.join("c1");
  client.connect();
  await until(() => client.state === "open", "open");
  const s1 = last(server);
  const delta = (index, d) => ({ type: "stream", conversation_id: "c1", reply_id: "r1", index, delta: d });
  s1.frame(delta(0, "Hel"));
  s1.frame(delta(1, "lo"));
  s1.frame(delta(1, "lo"));
  s1.frame(delta(3, "!"));
  assert.deepEqual(s1.frames("resume"), [{ type: "resume", reply_id: "r1", from_index: 2 }]);
  s1.drop();
  await until(() => server.sockets.length === 2 && client.state === "open", "reconnected");
  const s2 = last(server);
  assert.deepEqual(s2.frames("resume"), [{ type: "resume", reply_id: "r1", from_index: 2 }]);
  s2.frame(delta(2, ", "));
  s2.frame(delta(3, "world"));
  s2.frame({ type: "stream_end", conversation_id: "c1", reply_id: "r1", cancelled: false, message_id: "m9", seq: 4 });
  s2.frame(delta(4, "late"));
  assert.deepEqual(texts, ["Hel", "Hello", "Hello, ", "Hello, world"]);
  assert.equal(ended.text, "Hello, world");
  assert.deepEqual(client.streaming(), []);
  client.disconnect();
});

test("retryable errors resend the same client_msg_id; a refused message is reported and dropped", async () => {
  const { client, server } = await signedIn();
  const failed = [];
  client.on("failed", (f) => failed.push(f.error.code));
  client.random = () => 0;
  client.connect();
  await until(() => client.state === "open", "open");
  const ok = client.send("c1", "fine");
  const bad = client.send("c1", "x".repeat(5000));
  const s = last(server);
  s.frame({ type: "error", code: "UNAVAILABLE", message: "database down", ref: ok.client_msg_id });
  s.frame({ type: "error", code: "TOO_LARGE", message: "too long", ref: bad.client_msg_id });
  await until(() => s.frames("send").filter((f) => f.client_msg_id === ok.client_msg_id).length === 2, "resend", 3000);
  assert.deepEqual(failed, ["TOO_LARGE"]);
  assert.deepEqual(client.pending().map((i) => i.client_msg_id), [ok.client_msg_id]);
  client.disconnect();
});

test("an expired access token is refreshed once for concurrent calls, then the calls are retried", async () => {
  const { client, server } = await signedIn();
  server.validAccess = new Set(); // a0 expired
  const results = await Promise.all([client.api("GET", "/api/me"), client.api("GET", "/api/unread"), client.api("GET", "/api/me")]);
  assert.equal(server.refreshes, 1, "rotation: a second refresh with the same token would end the session");
  assert.deepEqual(results.map((r) => r.path), ["/api/me", "/api/unread", "/api/me"]);
  assert.equal(client.session.access_token, "a1");
  client.disconnect();
});

test("a 4401 close gets new tokens and a new ticket; a failed refresh signs out", async () => {
  const { client, server } = await signedIn();
  let signedOut = false;
  client.on("signedout", () => { signedOut = true; });
  client.connect();
  await until(() => client.state === "open", "open");
  server.validAccess = new Set();
  last(server).drop(4401);
  await until(() => server.sockets.length === 2 && client.state === "open", "reconnected after refresh");
  assert.equal(server.refreshes, 1);
  assert.equal(last(server).url, "ws://parley.test/ws?ticket=t2");
  client.session.refresh_token = "stolen-and-reused";
  client._save("parley.session", client.session);
  server.validAccess = new Set();
  last(server).drop(4401);
  await until(() => signedOut, "signed out");
  assert.equal(client.state, "offline");
  assert.equal(client.user, null);
});

test("after a REST refresh an open socket is given the new token in a refresh frame", async () => {
  const { client, server } = await signedIn();
  client.connect();
  await until(() => client.state === "open", "open");
  await client.refreshTokens();
  assert.deepEqual(last(server).frames("refresh"), [{ type: "refresh", access_token: "a1" }]);
  client.disconnect();
});

test("a restarted answer (higher attempt) replaces the text shown; deltas of the old attempt are ignored", async () => {
  const { client, server } = await signedIn();
  const texts = [];
  client.on("stream", (s) => texts.push(s.text));
  client.join("c1");
  client.connect();
  await until(() => client.state === "open", "open");
  const s = last(server);
  const delta = (attempt, index, d) => ({ type: "stream", conversation_id: "c1", reply_id: "r1", attempt, index, delta: d });
  s.frame(delta(1, 0, "Half an ans"));
  s.frame(delta(2, 0, "A whole"));
  s.frame(delta(1, 1, "wer"));
  s.frame(delta(2, 1, " answer"));
  assert.deepEqual(texts, ["Half an ans", "A whole", "A whole answer"]);
  assert.deepEqual(client.streaming(), [{ reply_id: "r1", conversation_id: "c1", text: "A whole answer" }]);
  client.disconnect();
});
