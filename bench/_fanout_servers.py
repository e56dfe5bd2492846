"""Process plumbing for ``bench.fanout``: server subprocesses, their CPU and memory, the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the servers in order
            )

    async def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.popen is None or self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log}:\n{self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{self.port}{path}")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class Sampler:
    """CPU (from cpu_times deltas over the load) and peak RSS (sampled) of groups of processes, and the
    whole machine's CPU (``machine``), so that other work on the machine shows in the results."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.peak: Counter[str] = Counter()
        self._cpu0: dict[int, float] = {}
        self._machine0: Any = None
        self._started_at = 0.0
        self._t0 = 0.0
        self.wall = 0.0
        self._task: asyncio.Task[None] | None = None

    def procs(self, group: str) -> list[psutil.Process]:
        """The group's processes; PostgreSQL's with their children (one backend per connection)."""
        found = []
        for pid in self.groups[group]:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                found += [proc, *(proc.children(recursive=True) if group == "postgres" else ())]
        return found

    def rss(self, group: str) -> int:
        total = 0
        for proc in self.procs(group):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _cpu(self) -> dict[int, float]:
        """CPU seconds per pid; a process born after ``start`` (a new PostgreSQL backend) counts from 0."""
        out = {}
        for proc in (p for group in self.groups for p in self.procs(group)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
                if self._started_at and proc.pid not in self._cpu0 and proc.create_time() >= self._started_at:
                    self._cpu0[proc.pid] = 0.0
        return out

    async def _loop(self) -> None:
        while True:
            for group in self.groups:
                self.peak[group] = max(self.peak[group], self.rss(group))
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self._cpu0, self._started_at = {}, 0.0  # nothing counts as "born during the window" yet
        self._cpu0, self._machine0, self._t0, self._started_at = (
            self._cpu(),
            psutil.cpu_times(),
            time.monotonic(),
            time.time(),
        )
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, float]:
        """CPU % per group over the window (100 = one core)."""
        cpu1, machine1, wall = self._cpu(), psutil.cpu_times(), time.monotonic() - self._t0
        self.wall = wall
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        result = {}
        for group in self.groups:
            members = {p.pid for p in self.procs(group)}
            used = sum(cpu1[p] - self._cpu0[p] for p in members if p in cpu1 and p in self._cpu0)
            result[group] = 100 * used / wall
        result["machine"] = 100 * (_busy(machine1) - _busy(self._machine0)) / wall
        result["steal"] = 100 * (getattr(machine1, "steal", 0) - getattr(self._machine0, "steal", 0)) / wall
        return result


def _busy(t: Any) -> float:
    """CPU seconds the machine spent working (guest time is already in user; steal is not ours)."""
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


def run_loop(coro: Any) -> Any:
    """uvloop when installed (as the servers and client processes use), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def socketio_nodes(redis_url: str, tmp: Path, database_url: str | None = None) -> list[Server]:
    """The baseline's two Socket.IO nodes (``bench/peers/socketio_server.py``), not started yet, sharing
    rooms through ``redis_url``; their logs go to ``tmp``. With ``database_url`` (an asyncpg DSN), the
    durable baseline: every message INSERTed before it is emitted."""
    from infrastructure.embedded import free_port

    script = str(ROOT / "bench" / "peers" / "socketio_server.py")
    name = "sio" if database_url is None else "siodb"
    nodes = []
    for n in (1, 2):
        port = free_port()
        argv = [script, "--port", str(port), "--redis-url", redis_url]
        if database_url is not None:
            argv += ["--database-url", database_url]
        nodes.append(Server(f"{name}{n}", argv, dict(os.environ), tmp / f"{name}{n}.log", port))
    return nodes


async def start_socketio_nodes(nodes: list[Server]) -> None:
    for node in nodes:
        node.start()
    await asyncio.gather(*(n.wait_ready("/socket.io/?EIO=4&transport=polling") for n in nodes))
