"""The client side of ``bench.connections``: a child process that holds a slice of the idle sockets
and, on command from the benchmark, connects them, drops and reconnects them all at once (a storm), or
reconnects the ones a killed node dropped to a surviving node.

It reuses the socket clients of ``bench._fanout_clients`` (the same ``websockets`` client stack for
Parley and the Socket.IO baseline) and times the two steps of a connect apart: ``open`` (WebSocket
handshake, plus Engine.IO/namespace open for the baseline) and ``join`` (Parley: ``join`` ->
``joined``, with ``after_seq`` on a reconnect; baseline: the ``join`` event -> its ack). Times are
wall-clock (``time.time()``), so the benchmark can compare them across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench._fanout_clients import (
    CONNECT_TIMEOUT,
    ParleyClient,
    RawSioClient,
    Recorder,
    SocketSpec,
    SocketState,
    _encode,
    raise_nofile_limit,
)


@dataclass
class StepReport:
    open_ms: list[float] = field(default_factory=list)
    join_ms: list[float] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    started_at: float = 0.0
    settled_at: float = 0.0  # the last join done (wall clock)
    closed_at: float = 0.0  # storm: the last socket's close handshake done, before any reconnect (wall clock)

    @classmethod
    def merge(cls, reports: list[StepReport]) -> StepReport:
        out = cls(started_at=min((r.started_at for r in reports), default=0.0))
        for r in reports:
            out.open_ms += r.open_ms
            out.join_ms += r.join_ms
            out.failed += r.failed
            out.errors += r.errors[: max(0, 5 - len(out.errors))]
            out.settled_at = max(out.settled_at, r.settled_at)
            out.closed_at = max(out.closed_at, r.closed_at)
        return out


class _Offer:
    """``deflate``: offer permessage-deflate in the handshake, as browsers do (the fan-out benchmark's
    client does not); the server decides whether it is used."""

    deflate = False
    ws: Any

    async def open(self, url: str, headers: dict[str, str] | None = None) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            url,
            additional_headers=headers,
            compression="deflate" if self.deflate else None,
            ping_interval=None,
            open_timeout=None,
        )


class TimedParley(_Offer, ParleyClient):
    """Parley's client with the handshake and the join timed apart, and ``after_seq`` on a rejoin."""

    last_seq: int | None = None
    waiting: asyncio.Future[str] | None = None

    async def rejoin(self) -> float:
        """One more ``join`` of its room on the open socket (the reader hands back ``joined``)."""
        self.waiting = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        frame = {"type": "join", "conversation_id": self.spec.room, "after_seq": self.last_seq or 0}
        await self.ws.send(_encode(frame).decode())
        await self.waiting
        return (time.perf_counter() - t0) * 1000

    async def handle(self, raw: str) -> None:
        if self.waiting is not None and raw.startswith('{"type":"joined"'):
            self.waiting.set_result(raw)
            self.waiting = None
            return
        await super().handle(raw)

    async def connect_timed(self, url: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        await self.open(url, {"Authorization": f"Bearer {self.spec.token}"})
        t1 = time.perf_counter()
        join: dict[str, Any] = {"type": "join", "conversation_id": self.spec.room}
        if self.last_seq is not None:
            join["after_seq"] = self.last_seq
        await self.ws.send(_encode(join).decode())
        joined = await self.recv_until('{"type":"joined"')
        self.last_seq = int(joined.rsplit('"last_seq":', 1)[1].rstrip("}"))
        t2 = time.perf_counter()
        self.start_reader()
        return (t1 - t0) * 1000, (t2 - t1) * 1000


class TimedSio(_Offer, RawSioClient):
    waiting: asyncio.Future[str] | None = None

    async def rejoin(self) -> float:
        self.waiting = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        self.next_id += 1
        await self.ws.send(f"42{self.next_id}" + _encode(["join", {"room": self.spec.room}]).decode())
        await self.waiting
        return (time.perf_counter() - t0) * 1000

    async def handle(self, raw: str) -> None:
        if self.waiting is not None and raw.startswith("43"):
            self.waiting.set_result(raw)
            self.waiting = None
            return
        await super().handle(raw)

    async def connect_timed(self, url: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        await self.open(url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
        await self.recv_until("0")
        await self.ws.send("40")
        await self.recv_until("40")
        t1 = time.perf_counter()
        await self.ws.send("420" + _encode(["join", {"room": self.spec.room}]).decode())
        await self.recv_until("430")
        t2 = time.perf_counter()
        self.start_reader()
        return (t1 - t0) * 1000, (t2 - t1) * 1000


Timed = TimedParley | TimedSio


async def _connect(clients: list[Timed], urls: list[str], concurrency: int, report: StepReport) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Timed, url: str) -> None:
        async with gate:
            client.state = SocketState()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    open_ms, join_ms = await client.connect_timed(url)
            except Exception as exc:
                report.failed += 1
                if len(report.errors) < 5:
                    report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                client.state.closing = True
                return
            report.open_ms.append(open_ms)
            report.join_ms.append(join_ms)
            report.settled_at = max(report.settled_at, time.time())

    await asyncio.gather(*(one(c, u) for c, u in zip(clients, urls, strict=True)))


async def _close(client: Timed) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await client.close()


async def _wait_dropped(client: Timed) -> None:
    if client.reader is not None:
        with contextlib.suppress(Exception):
            await client.reader


async def serve(conn: Connection, kind: str, specs: list[SocketSpec], concurrency: int, deflate: bool) -> None:
    """Obey the benchmark's commands until ``quit``: every command is answered with a StepReport."""
    rec = Recorder()
    _Offer.deflate = deflate
    clients: list[Timed] = [TimedParley(s, rec) if kind == "parley" else TimedSio(s, rec) for s in specs]
    urls = [s.url for s in specs]
    while True:
        if not await asyncio.to_thread(conn.poll, 3600):
            return
        command, arg = conn.recv()
        report = StepReport()
        if command == "quit":
            await asyncio.gather(*(_close(c) for c in clients))
            conn.send(report)
            return
        if command == "connect":
            report.started_at = time.time()
            await _connect(clients, urls, concurrency, report)
        elif command == "storm":
            # Every socket dropped by the client at the same moment, then all reconnected and rejoined.
            start_at: float = arg
            await asyncio.sleep(max(0.0, start_at - time.time()))
            report.started_at = time.time()
            await asyncio.gather(*(_close(c) for c in clients))
            report.closed_at = time.time()
            await _connect(clients, urls, concurrency, report)
        elif command == "probe":
            # Joins one at a time on held sockets: the latency of a join, not of a queue of them.
            report.started_at = time.time()
            for client in [c for c in clients if not c.state.closing][:arg]:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        report.join_ms.append(await client.rejoin())
        elif command == "failover":
            # A node was killed at ``killed_at``: its sockets reconnect to the surviving node.
            dead, alive, killed_at = arg
            report.started_at = killed_at
            moved = [i for i, u in enumerate(urls) if u == dead]
            await asyncio.gather(*(_wait_dropped(clients[i]) for i in moved))
            for i in moved:
                urls[i] = alive
            await _connect([clients[i] for i in moved], [alive] * len(moved), concurrency, report)
        conn.send(report)


def child_main(conn: Connection, kind: str, specs: list[SocketSpec], concurrency: int, deflate: bool) -> None:
    raise_nofile_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(serve(conn, kind, specs, concurrency, deflate))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise


class ClientProc:
    """One child process of clients, driven over a pipe."""

    def __init__(self, kind: str, specs: list[SocketSpec], concurrency: int, deflate: bool) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=child_main, args=(child, kind, specs, concurrency, deflate), daemon=True)
        self.process.start()
        self.pid = self.process.pid

    async def call(self, command: str, arg: Any = None, timeout: float = 600) -> StepReport:
        self._conn.send((command, arg))
        if not await asyncio.to_thread(self._conn.poll, timeout):
            raise TimeoutError(f"client process {self.pid}: no answer to {command} within {timeout:.0f}s")
        try:
            got = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"client process {self.pid} exited with {self.process.exitcode}") from None
        if isinstance(got, tuple):
            raise RuntimeError(f"client process {self.pid} failed:\n{got[1]}")
        report: StepReport = got
        return report

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.call("quit", timeout=60)
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)
