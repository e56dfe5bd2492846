"""Fault tools for end-to-end tests: SQL on the cluster's database, paused processes, a skewed clock,
minted tokens, and a load that records every send's outcome."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from infrastructure.auth.jwt_codec import JwtCodec
from infrastructure.settings import AuthSettings
from tests.conftest import TEST_JWT_SECRET
from tests.e2e.client import ChatClient


async def sql(database_url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


@contextlib.contextmanager
def paused(process: subprocess.Popen[bytes]) -> Any:
    """SIGSTOP for the duration of the block (the process keeps its sockets and locks, answers nothing)."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def token_expiring_in(user_id: str, seconds: float) -> str:
    """An access token like the cluster's own (same secret, issuer, audience), expiring in ``seconds``."""
    codec = JwtCodec(AuthSettings(jwt_secret=TEST_JWT_SECRET))
    ttl = AuthSettings().access_ttl_seconds
    token, _ = codec.issue(uuid.UUID(user_id), datetime.now(UTC) - timedelta(seconds=ttl - seconds))
    return token


def skewed_env(env: dict[str, str], seconds: float) -> dict[str, str]:
    """Environment for a process whose wall clock runs ``seconds`` ahead (libfaketime via LD_PRELOAD;
    monotonic time is left alone, as NTP skew would)."""
    import libfaketime

    _, preload = libfaketime.get_reload_information()
    return {**env, **preload, "DONT_FAKE_MONOTONIC": "1", "FAKETIME": f"{seconds:+.0f}s"}


async def metric(base_url: str, name: str) -> float:
    """Sum of a Prometheus metric's samples (all labels) on a node."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


@dataclass
class Outcomes:
    """What every send attempt got: statuses (REST) or ack/error codes (WS), with timestamps."""

    events: list[tuple[float, str]] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        self.events.append((time.monotonic(), outcome))

    def between(self, start: float, end: float) -> Counter[str]:
        return Counter(o for t, o in self.events if start <= t <= end)

    def total(self) -> Counter[str]:
        return Counter(o for _, o in self.events)


async def ws_sender(
    client: ChatClient,
    conv: str,
    stop: asyncio.Event,
    outcomes: Outcomes,
    ids: list[str],
    pause: float = 0.02,
    filler: int = 0,
) -> None:
    """Send until ``stop``; an unacked send is retried with the same client_msg_id (as clients must).
    ``filler`` random characters (incompressible) make each message bigger."""
    n = 0
    while not stop.is_set():
        client_msg_id = f"ws-{uuid.uuid4().hex}"
        ids.append(client_msg_id)
        n += 1
        text = f"ws load {n} {secrets.token_urlsafe(filler * 3 // 4)}" if filler else f"ws load {n}"
        for _attempt in range(200):
            try:
                await client.send(conv, text, client_msg_id=client_msg_id)
                outcomes.add("ack")
                break
            except RuntimeError as exc:  # an error frame
                code = "UNAVAILABLE" if "UNAVAILABLE" in str(exc) else "INTERNAL" if "INTERNAL" in str(exc) else "error"
                outcomes.add(code)
            except (TimeoutError, ConnectionError):
                outcomes.add("timeout")
                if client.closed.done():
                    return
            await asyncio.sleep(0.1)
        await asyncio.sleep(pause)


async def rest_sender(
    base_url: str, token: str, conv: str, stop: asyncio.Event, outcomes: Outcomes, ids: list[str]
) -> None:
    """POST messages until ``stop``, retrying each with the same client_msg_id until it is stored."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=headers) as http:
        n = 0
        while not stop.is_set():
            client_msg_id = f"rest-{uuid.uuid4().hex}"
            ids.append(client_msg_id)
            n += 1
            for _attempt in range(200):
                try:
                    r = await http.post(
                        f"/api/conversations/{conv}/messages", json={"client_msg_id": client_msg_id, "text": f"r{n}"}
                    )
                    outcomes.add(str(r.status_code))
                    if r.status_code == 503:
                        assert r.headers.get("retry-after"), "503 without Retry-After"
                    if r.status_code in (200, 201):
                        break
                except httpx.HTTPError:
                    outcomes.add("transport")
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.05)
