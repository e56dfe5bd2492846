"""The client side of ``bench.fanout``: socket clients for Parley and for the Socket.IO baseline, the
open-loop sender schedule, the per-socket delivery checks, and the worker that runs a slice of the
clients (in the benchmark's process, or in a child process when ``--client-procs`` > 1).

A worker connects and joins its sockets, reports, waits for the common start time, sends on schedule,
drains, reports again and closes. Latencies are wall-clock (``time.time()``) differences, so they are
comparable across worker processes on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import resource
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

import msgspec

#: Padding that makes a message a plausible chat line (~100 bytes of text).
FILLER = "the quick brown fox jumps over the lazy dog while the band plays on"
CONNECT_TIMEOUT = 30.0
#: The drain ends when every send is acked and no frame arrived for this long (or at ``--drain``);
#: a delivery still missing then counts as lost.
QUIET_SECONDS = 2.0

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class SocketSpec:
    url: str  # Parley: ws://host:port/ws; baseline: http://host:port (Socket.IO adds its own path)
    room: str  # conversation id (Parley) or room name (baseline)
    token: str  # bearer token; empty for the baseline
    sender: int  # global sender index, -1 for a socket that only receives


@dataclass(frozen=True)
class Plan:
    kind: str  # "parley" | "baseline" (raw Engine.IO on websockets) | "socketio" (python-socketio AsyncClient)
    sockets: list[SocketSpec]
    senders: int  # all senders of the run, for the shared schedule
    rate: float  # messages per second over all senders
    duration: float
    drain: float
    connect_concurrency: int


@dataclass
class ConnectReport:
    connect_ms: list[float] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    room_sockets: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @classmethod
    def merge(cls, reports: list[ConnectReport]) -> ConnectReport:
        out = cls()
        for r in reports:
            out.connect_ms += r.connect_ms
            out.failed += r.failed
            out.errors += r.errors
            out.room_sockets.update(r.room_sockets)
            out.seconds = max(out.seconds, r.seconds)
        return out


@dataclass
class LoadReport:
    sent: int = 0
    send_failed: int = 0
    acked: dict[str, str] = field(default_factory=dict)  # client_msg_id -> room
    ack_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)  # actual send time - scheduled time
    delivery_ms: list[float] = field(default_factory=list)
    delivered: Counter[str] = field(default_factory=Counter)  # client_msg_id -> sockets that got it once
    # The same, counting only the sockets that stayed open to the end (a dropped socket would resync
    # on reconnect: what it missed is a dropped connection, not a lost message), and those sockets per room.
    kept_delivered: Counter[str] = field(default_factory=Counter)
    kept_rooms: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    out_of_order: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # error frames / refused sends, by code
    other_frames: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)  # sockets closed by the server, by close code
    last_frame_at: float = 0.0
    drain_seconds: float = 0.0
    drain_cut: bool = False  # the drain hit --drain while acks or frames were still outstanding

    @classmethod
    def merge(cls, reports: list[LoadReport]) -> LoadReport:
        out = cls()
        for r in reports:
            out.sent += r.sent
            out.send_failed += r.send_failed
            out.acked.update(r.acked)
            out.ack_ms += r.ack_ms
            out.send_lag_ms += r.send_lag_ms
            out.delivery_ms += r.delivery_ms
            out.delivered.update(r.delivered)
            out.kept_delivered.update(r.kept_delivered)
            out.kept_rooms.update(r.kept_rooms)
            out.duplicates += r.duplicates
            out.out_of_order += r.out_of_order
            for mine, theirs in ((out.errors, r.errors), (out.other_frames, r.other_frames), (out.dropped, r.dropped)):
                mine.update(theirs)
            out.last_frame_at = max(out.last_frame_at, r.last_frame_at)
            out.drain_seconds = max(out.drain_seconds, r.drain_seconds)
            out.drain_cut = out.drain_cut or r.drain_cut
        return out


class Recorder:
    """Everything one worker observes; the sockets call it from their reader tasks."""

    def __init__(self) -> None:
        self.report = LoadReport()
        self.pending: dict[str, float] = {}  # client_msg_id -> scheduled send time
        self.rooms: dict[str, str] = {}  # client_msg_id -> room, for sends of this worker
        self.measuring = False

    def ack(self, cmid: str) -> None:
        scheduled = self.pending.pop(cmid, None)
        if scheduled is not None:
            now = time.time()
            self.report.ack_ms.append((now - scheduled) * 1000)
            self.report.acked[cmid] = self.rooms[cmid]
            self.report.last_frame_at = now

    def refused(self, cmid: str | None, code: str) -> None:
        if cmid is not None:
            self.pending.pop(cmid, None)
        self.report.errors[code] += 1

    def message(self, sock: SocketState, dup_key: object, order_key: object, order: int, cmid: str, text: str) -> None:
        if not self.measuring:
            return
        now = time.time()
        report = self.report
        report.last_frame_at = now
        if dup_key in sock.seen:
            report.duplicates += 1
            return
        sock.seen.add(dup_key)
        if order <= sock.last.get(order_key, -1):
            report.out_of_order += 1
        sock.last[order_key] = order
        sock.cmids.append(cmid)
        report.delivered[cmid] += 1
        with contextlib.suppress(ValueError):
            report.delivery_ms.append((now - float(text[2 : text.index(" ")])) * 1000)


@dataclass
class SocketState:
    seen: set[object] = field(default_factory=set)
    last: dict[object, int] = field(default_factory=dict)
    cmids: list[str] = field(default_factory=list)  # messages received (once each)
    joined: bool = False
    dropped: bool = False  # closed by the server
    closing: bool = False  # closed by us (or never opened)


class Client(Protocol):
    state: SocketState

    async def connect(self) -> None: ...  # connect and join the room
    async def send(self, cmid: str, text: str) -> None: ...
    async def close(self) -> None: ...


class WsClient:
    """A ``websockets`` client whose reader task hands every text frame to ``handle``. No client
    keepalive (the servers ping) and no permessage-deflate, for Parley and the baseline alike."""

    def __init__(self, spec: SocketSpec, rec: Recorder) -> None:
        self.spec, self.rec, self.state = spec, rec, SocketState()
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def open(self, url: str, headers: dict[str, str] | None = None) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            url, additional_headers=headers, compression=None, ping_interval=None, open_timeout=None
        )

    async def recv_until(self, prefix: str) -> str:
        while not (raw := await self.ws.recv()).startswith(prefix):
            if raw.startswith(('{"type":"error"', "44")):
                raise RuntimeError(f"refused: {raw[:200]}")
        return str(raw)

    def start_reader(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                await self.handle(raw)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a client bug: shown under "errors", the socket is left out of the counts
            self.rec.report.errors[f"client {type(exc).__name__}: {exc}"[:100]] += 1
            self.state.dropped = True
            return
        if not self.state.closing:
            self.state.dropped = True
            self.rec.report.dropped[str(self.ws.close_code or "no close frame")] += 1

    async def handle(self, raw: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self.state.closing = True
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader


class ParleyClient(WsClient):
    """protocol.md "WebSocket": Bearer auth, ``join`` -> ``joined``, ``send`` -> ``ack`` + ``message``s."""

    async def connect(self) -> None:
        await self.open(self.spec.url, {"Authorization": f"Bearer {self.spec.token}"})
        await self.ws.send(_encode({"type": "join", "conversation_id": self.spec.room}).decode())
        await self.recv_until('{"type":"joined"')
        self.start_reader()

    async def handle(self, raw: str) -> None:
        frame = _decode(raw)
        kind, rec = frame["type"], self.rec
        if kind == "message":
            cid, seq = frame["conversation_id"], frame["seq"]
            rec.message(self.state, (cid, seq), cid, seq, frame["client_msg_id"] or "", frame["text"])
        elif kind == "ack":
            rec.ack(frame["client_msg_id"])
        elif kind == "error":
            rec.refused(frame.get("ref"), frame["code"])
        else:
            rec.report.other_frames[kind] += 1

    async def send(self, cmid: str, text: str) -> None:
        frame = {"type": "send", "conversation_id": self.spec.room, "client_msg_id": cmid, "text": text}
        await self.ws.send(_encode(frame).decode())


class RawSioClient(WsClient):
    """Socket.IO v5 over Engine.IO v4 spoken directly on ``websockets`` (the same client stack as
    Parley's): ``0`` open, ``40`` namespace connect, ``42[event, data]``, ``42<id>[...]`` -> ``43<id>[...]``
    acks, server ping ``2`` -> pong ``3``."""

    def __init__(self, spec: SocketSpec, rec: Recorder) -> None:
        super().__init__(spec, rec)
        self.acks: dict[int, str] = {}
        self.next_id = 0

    async def connect(self) -> None:
        await self.open(self.spec.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
        await self.recv_until("0")
        await self.ws.send("40")
        await self.recv_until("40")
        await self.ws.send("420" + _encode(["join", {"room": self.spec.room}]).decode())
        await self.recv_until("430")
        self.start_reader()

    async def handle(self, raw: str) -> None:
        if raw.startswith("42"):
            event, data = _decode(raw[2:])
            if event == "message":
                cmid = data["client_msg_id"]
                sender, _, n = cmid[1:].partition("-")
                self.rec.message(self.state, cmid, sender, int(n), cmid, data["text"])
            else:
                self.rec.report.other_frames[event] += 1
        elif raw.startswith("43"):
            bracket = raw.index("[")
            cmid = self.acks.pop(int(raw[2:bracket]), None)
            if cmid is not None:
                reply = _decode(raw[bracket:])
                if reply and reply[0].get("ok"):
                    self.rec.ack(cmid)
                else:
                    self.rec.refused(cmid, "NACK")
        elif raw == "2":
            await self.ws.send("3")
        else:
            self.rec.report.other_frames[raw[:2]] += 1

    async def send(self, cmid: str, text: str) -> None:
        self.next_id += 1
        self.acks[self.next_id] = cmid
        data = ["send", {"room": self.spec.room, "client_msg_id": cmid, "text": text}]
        await self.ws.send(f"42{self.next_id}" + _encode(data).decode())


class SioClient:
    """python-socketio's ``AsyncClient`` over the WebSocket transport only (``--sio-client socketio``)."""

    def __init__(self, spec: SocketSpec, rec: Recorder, http: Any) -> None:
        import socketio

        self.spec, self.rec, self.state = spec, rec, SocketState()
        self.sio = socketio.AsyncClient(
            reconnection=False, handle_sigint=False, http_session=http, request_timeout=CONNECT_TIMEOUT
        )
        self.sio.on("message", self._on_message)
        self.sio.on("disconnect", self._on_disconnect)

    async def connect(self) -> None:
        await self.sio.connect(self.spec.url, transports=["websocket"], wait_timeout=CONNECT_TIMEOUT)
        await self.sio.call("join", {"room": self.spec.room}, timeout=CONNECT_TIMEOUT)

    def _on_message(self, data: dict[str, Any]) -> None:
        cmid = data["client_msg_id"]
        sender, _, n = cmid[1:].partition("-")
        self.rec.message(self.state, cmid, sender, int(n), cmid, data["text"])

    def _on_disconnect(self, reason: Any = None) -> None:
        if not self.state.closing:
            self.state.dropped = True
            self.rec.report.dropped[str(reason)] += 1

    async def send(self, cmid: str, text: str) -> None:
        data = {"room": self.spec.room, "client_msg_id": cmid, "text": text}
        await self.sio.emit("send", data, callback=functools.partial(self._on_ack, cmid))

    def _on_ack(self, cmid: str, reply: Any = None) -> None:
        if isinstance(reply, dict) and reply.get("ok"):
            self.rec.ack(cmid)
        else:
            self.rec.refused(cmid, "NACK")

    async def close(self) -> None:
        self.state.closing = True
        await self.sio.disconnect()


async def _connect_all(clients: list[Client], specs: list[SocketSpec], concurrency: int) -> ConnectReport:
    report = ConnectReport()
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client, spec: SocketSpec) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await client.connect()
            except Exception as exc:
                report.failed += 1
                if len(report.errors) < 5:
                    report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                client.state.closing = True  # a failed socket is not "dropped" later
                return
            report.connect_ms.append((time.perf_counter() - started) * 1000)
            client.state.joined = True
            report.room_sockets[spec.room] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(c, s) for c, s in zip(clients, specs, strict=True)))
    report.seconds = time.perf_counter() - started
    return report


async def _send_on_schedule(client: Client, spec: SocketSpec, plan: Plan, start_at: float, rec: Recorder) -> None:
    """Open loop: message n of sender i is due at start + (i + n * S) / T, whatever came before it."""
    n = 0
    while (offset := (spec.sender + n * plan.senders) / plan.rate) < plan.duration:
        due = start_at + offset
        if (delay := due - time.time()) > 0:
            await asyncio.sleep(delay)
        cmid = f"s{spec.sender}-{n}"
        rec.pending[cmid], rec.rooms[cmid] = due, spec.room
        rec.report.send_lag_ms.append((time.time() - due) * 1000)
        try:
            await client.send(cmid, f"t={due:.6f} {cmid} {FILLER}")
            rec.report.sent += 1
        except Exception:
            rec.pending.pop(cmid, None)
            rec.report.send_failed += 1
        n += 1


async def _drain(rec: Recorder, limit: float) -> None:
    """Until every send is acked and no frame came for QUIET_SECONDS, or ``limit`` (then ``drain_cut``)."""
    started = time.monotonic()
    while not (quiet := not rec.pending and time.time() - rec.report.last_frame_at >= QUIET_SECONDS):
        if time.monotonic() - started >= limit:
            break
        await asyncio.sleep(0.1)
    rec.report.drain_seconds, rec.report.drain_cut = time.monotonic() - started, not quiet


async def run_worker(
    plan: Plan,
    connected: Callable[[ConnectReport], Awaitable[float]],
    finished: Callable[[LoadReport], Awaitable[None]],
) -> None:
    """Connect, report, wait for the start time, load, drain, report, close."""
    rec = Recorder()
    http: Any = None
    if plan.kind == "parley":
        clients: list[Client] = [ParleyClient(spec, rec) for spec in plan.sockets]
    elif plan.kind == "baseline":
        clients = [RawSioClient(spec, rec) for spec in plan.sockets]
    else:
        import aiohttp

        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        clients = [SioClient(spec, rec, http) for spec in plan.sockets]
    try:
        start_at = await connected(await _connect_all(clients, plan.sockets, plan.connect_concurrency))
        rec.measuring = True
        senders = [(c, s) for c, s in zip(clients, plan.sockets, strict=True) if s.sender >= 0 and not c.state.closing]
        await asyncio.gather(*(_send_on_schedule(c, s, plan, start_at, rec) for c, s in senders))
        await _drain(rec, plan.drain)
        rec.measuring = False
        kept = [(c, s) for c, s in zip(clients, plan.sockets, strict=True) if c.state.joined and not c.state.dropped]
        rec.report.kept_rooms = Counter(s.room for _, s in kept)
        rec.report.kept_delivered = Counter(cmid for c, _ in kept for cmid in c.state.cmids)
        await finished(rec.report)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        if http is not None:
            await http.close()


# -- running workers from the benchmark --------------------------------------------------------------


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard one (children inherit it); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class LocalWorker:
    """The clients in this process, on this event loop."""

    def __init__(self, plan: Plan) -> None:
        loop = asyncio.get_running_loop()
        self._connected: asyncio.Future[ConnectReport] = loop.create_future()
        self._go: asyncio.Future[float] = loop.create_future()
        self._done: asyncio.Future[LoadReport] = loop.create_future()
        self.task = asyncio.create_task(run_worker(plan, self._on_connected, self._on_finished))
        self.pid = None

    async def _on_connected(self, report: ConnectReport) -> float:
        self._connected.set_result(report)
        return await self._go

    async def _on_finished(self, report: LoadReport) -> None:
        self._done.set_result(report)

    async def _first(self, future: asyncio.Future[Any], timeout: float) -> Any:
        await asyncio.wait({future, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        if self.task.done():
            self.task.result()  # re-raises the worker's error
        raise TimeoutError(f"client worker did not report within {timeout:.0f}s")

    async def connected(self, timeout: float) -> ConnectReport:
        report: ConnectReport = await self._first(self._connected, timeout)
        return report

    async def finish(self, start_at: float, timeout: float) -> LoadReport:
        self._go.set_result(start_at)
        report: LoadReport = await self._first(self._done, timeout)
        return report

    async def stop(self) -> None:
        if not self._go.done():
            self._go.cancel()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(40):
                await self.task
        self.task.cancel()


def _child_main(conn: Connection, plan: Plan) -> None:
    raise_nofile_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def connected(report: ConnectReport) -> float:
        conn.send(("connected", report))
        if not await asyncio.to_thread(conn.poll, 600):
            raise TimeoutError("no start signal")
        start_at: float = conn.recv()
        return start_at

    async def finished(report: LoadReport) -> None:
        conn.send(("done", report))

    try:
        asyncio.run(run_worker(plan, connected, finished))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise


class ProcWorker:
    """The clients in a child process (spawned, so it inherits no event loop), talking over a pipe."""

    def __init__(self, plan: Plan) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(child, plan), daemon=True)
        self.process.start()
        self.pid = self.process.pid
        self._finished = False

    async def _expect(self, kind: str, timeout: float) -> Any:
        if not await asyncio.to_thread(self._conn.poll, timeout):
            raise TimeoutError(f"client process {self.pid} did not report within {timeout:.0f}s")
        try:
            got, payload = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"client process {self.pid} exited with {self.process.exitcode}") from None
        if got == "error":
            raise RuntimeError(f"client process {self.pid} failed:\n{payload}")
        if got != kind:
            raise RuntimeError(f"client process {self.pid}: expected {kind}, got {got}")
        return payload

    async def connected(self, timeout: float) -> ConnectReport:
        report: ConnectReport = await self._expect("connected", timeout)
        return report

    async def finish(self, start_at: float, timeout: float) -> LoadReport:
        self._conn.send(start_at)
        report: LoadReport = await self._expect("done", timeout)
        self._finished = True
        return report

    async def stop(self) -> None:
        """After a finished run the child closes its sockets and exits; otherwise it is killed."""
        if self._finished:
            await asyncio.to_thread(self.process.join, 40)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)
