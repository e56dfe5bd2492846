"""Sessions end everywhere, whatever Redis does, and a node with a skewed clock changes nothing.

Two API nodes (the second one's clock 300 s ahead) and a relay, default limits. Every test keeps a
writer sending to a bystander while it works and checks the bystander's recorded history afterwards:
progress during and after the fault, nothing lost, duplicated or reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from infrastructure.embedded import EmbeddedRedis, start_redis
from tests.conftest import TEST_JWT_SECRET
from tests.e2e.checker import History, check
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster
from tests.e2e.faults import skewed_env, sql, token_expiring_in

SKEW_SECONDS = 300


@pytest.fixture(scope="module")
def cluster(
    e2e_database_url: str, e2e_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    log_dir = tmp_path_factory.mktemp("e2e-sessions-logs")
    built = Cluster.build(
        database_url=e2e_database_url, redis_url=e2e_redis.url, log_dir=log_dir, jwt_secret=TEST_JWT_SECRET
    )
    built.nodes[1].env = skewed_env(built.nodes[1].env, SKEW_SECONDS)
    built.start()
    try:
        yield built
    finally:
        built.stop()


class Room:
    """A conversation with a writer (alice, node 1) and a bystander (bob, node 2) who must see it all."""

    def __init__(self, api: Api, cluster: Cluster, history: History) -> None:
        self.api, self.cluster, self.history = api, cluster, history
        self.stop = asyncio.Event()

    async def open(self, *members: dict[str, str]) -> str:
        self.alice, self.bob = await self.api.user(), await self.api.user()
        self.conv = await self.api.conversation(self.alice, self.bob, *members)
        self.writer = await ChatClient("alice@1", self.history).connect(
            self.cluster.nodes[0].ws_url, self.alice["token"]
        )
        self.reader = await ChatClient("bob@2", self.history).connect(self.cluster.nodes[1].ws_url, self.bob["token"])
        await self.writer.join(self.conv)
        await self.reader.join(self.conv)
        self.task = asyncio.create_task(self._write())
        return self.conv

    async def _write(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                await self.writer.send(self.conv, f"steady {n}")
            await asyncio.sleep(0.15)  # ~6/s: under the default 10/s limit

    def acked(self) -> int:
        return len([1 for cid, _ in self.history.acked if cid == self.conv])

    async def finish(self) -> None:
        self.stop.set()
        await self.task
        last = max(seq for cid, seq in self.history.acked if cid == self.conv)
        await self.reader.wait_for_seq(self.conv, last, timeout=30)
        verdict = check(self.history, [self.reader.name], self.conv)
        assert verdict.ok, verdict
        await self.writer.close()
        await self.reader.close()


@pytest.fixture
async def room(api: Api, cluster: Cluster, history: History) -> AsyncIterator[Room]:
    made = Room(api, cluster, history)
    yield made
    if not made.stop.is_set():
        made.stop.set()


async def _closed(client: ChatClient, timeout: float = 15) -> tuple[int | None, float]:
    started = time.monotonic()
    code, _ = await asyncio.wait_for(asyncio.shield(client.closed), timeout)
    return code, time.monotonic() - started


async def test_sockets_close_with_4401_at_expiry_after_logout_and_after_account_deletion(
    cluster: Cluster, api: Api, room: Room, history: History, e2e_database_url: str
) -> None:
    expiring, leaving, deleted = await api.user(), await api.user(), await api.user()
    conv = await room.open(expiring, leaving, deleted)
    node1, node2 = cluster.nodes
    # Expiry (node 1 keeps true time): one socket lets its 3 s token run out, one refreshes in band.
    lapsing = await ChatClient("lapsing", history).connect(node1.ws_url, token_expiring_in(expiring["id"], 3))
    refreshed = await ChatClient("refreshed", history).connect(node1.ws_url, token_expiring_in(expiring["id"], 3))
    await refreshed.join(conv)
    await refreshed.send_json({"type": "refresh", "access_token": expiring["token"]})
    assert (await refreshed.expect("refreshed"))["expires_in"] > 60
    code, waited = await _closed(lapsing)
    print(f"expiry: closed with {code} {waited:.2f}s after connect (token lifetime 3 s)")
    assert code == 4401
    before = len(refreshed.seqs(conv))
    await asyncio.sleep(1.5)
    assert not refreshed.closed.done() and len(refreshed.seqs(conv)) > before, "refreshed socket stalled"

    # Logout on node 1 closes the user's sockets on both nodes.
    on1 = await ChatClient("leaving@1", history).connect(node1.ws_url, leaving["token"])
    on2 = await ChatClient("leaving@2", history).connect(node2.ws_url, leaving["token"])
    await on2.join(conv)
    async with httpx.AsyncClient(base_url=node1.base_url) as http:
        started = time.monotonic()
        r = await http.post("/api/auth/logout", headers={"Authorization": f"Bearer {leaving['token']}"})
        assert r.status_code == 204
        codes = await asyncio.gather(_closed(on1), _closed(on2))
    print(f"logout: closed {[c for c, _ in codes]} within {time.monotonic() - started:.2f}s on both nodes")
    assert [c for c, _ in codes] == [4401, 4401]

    # Account deletion (by an operator, in the database): sockets closed, the token refused everywhere.
    gone1 = await ChatClient("deleted@1", history).connect(node1.ws_url, deleted["token"])
    gone2 = await ChatClient("deleted@2", history).connect(node2.ws_url, deleted["token"])
    started = time.monotonic()
    await sql(e2e_database_url, "DELETE FROM users WHERE id = $1::uuid", deleted["id"])
    codes = await asyncio.gather(_closed(gone1), _closed(gone2))
    print(f"deletion: closed {[c for c, _ in codes]} within {time.monotonic() - started:.2f}s on both nodes")
    assert [c for c, _ in codes] == [4401, 4401]
    headers = {"Authorization": f"Bearer {deleted['token']}"}
    async with httpx.AsyncClient(base_url=node1.base_url, headers=headers) as http:
        statuses = [
            (await http.get("/api/conversations")).status_code,
            (await http.get("/api/unread")).status_code,
            (await http.post("/api/auth/ws-ticket")).status_code,
        ]
    assert statuses == [401, 401, 401]
    await room.finish()
    print(f"progress: {room.acked()} messages acked and delivered to the bystander during the test")
    assert room.acked() > 20
    await refreshed.close()


async def _nodes_log(cluster: Cluster, text: str, *, timeout: float) -> float:
    """Seconds until every node's log shows ``text``."""
    started = time.monotonic()
    while not all(text in node.log_path.read_text() for node in cluster.nodes):
        assert time.monotonic() - started < timeout, f"not every node logged {text!r}"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def _ws_refused(url: str, **kwargs: object) -> int | None:
    async with websockets.connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code


async def test_redis_restored_from_a_stale_snapshot_still_refuses_the_logged_out_token_and_the_used_ticket(
    cluster: Cluster, api: Api, room: Room, e2e_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    await room.open()
    victim = await api.user()
    redis = Redis.from_url(e2e_redis.url)
    await redis.save()
    await redis.aclose()
    snapshot = tmp_path / "dump.rdb"
    shutil.copy(e2e_redis.data_dir / "dump.rdb", snapshot)

    ticket = await api.ticket(victim)
    async with websockets.connect(f"{cluster.nodes[0].ws_url}?ticket={ticket}") as ws:
        await ws.send('{"type": "ping"}')
        assert '"pong"' in str(await ws.recv())
    async with httpx.AsyncClient(base_url=cluster.nodes[0].base_url) as http:
        r = await http.post("/api/auth/logout", headers={"Authorization": f"Bearer {victim['token']}"})
        assert r.status_code == 204
    acked_before = room.acked()

    # Redis goes back in time: stopped, its AOF gone, restarted from the older snapshot.
    e2e_redis.stop()
    shutil.rmtree(e2e_redis.data_dir / "appendonlydir", ignore_errors=True)
    shutil.copy(snapshot, e2e_redis.data_dir / "dump.rdb")
    restored = start_redis(e2e_redis.data_dir, port=e2e_redis.port, appendonly=False)
    e2e_redis.process = restored.process
    redis = Redis.from_url(e2e_redis.url)
    await redis.config_set("appendonly", "yes")  # back to the suite's configuration
    await redis.aclose()

    restored_at, acked_at_restore = time.monotonic(), room.acked()
    headers = {"Authorization": f"Bearer {victim['token']}"}
    for node in cluster.nodes:
        async with httpx.AsyncClient(base_url=node.base_url, headers=headers) as http:
            assert (await http.get("/api/me")).status_code == 401
    assert await _ws_refused(cluster.nodes[0].ws_url, additional_headers=headers) == 4401
    assert await _ws_refused(f"{cluster.nodes[1].ws_url}?ticket={ticket}") == 4401
    checked_in, acked_after = time.monotonic() - restored_at, room.acked()
    # The nodes notice the restart (Redis' run_id changed; the rewound epoch did not) at their next tick.
    noticed = await _nodes_log(cluster, "Redis restarted", timeout=25)
    await asyncio.sleep(max(0.0, 2 - (time.monotonic() - restored_at - checked_in)))
    await room.finish()
    print(
        f"rewind: refusals checked in {checked_in:.2f}s; both nodes noticed the restart after {noticed:.1f}s;"
        f" acked {acked_before} before the logout, {acked_at_restore} at the restore, {acked_after} after the"
        f" checks, {room.acked()} in all"
    )
    assert room.acked() > acked_after >= acked_at_restore


async def test_a_node_300s_ahead_cannot_double_the_rate_limit_and_created_at_is_monotonic(
    cluster: Cluster, api: Api, history: History
) -> None:
    alice = await api.user()
    conv = await api.conversation(alice)
    sockets = [
        await ChatClient(f"alice@{i}", history).connect(node.ws_url, alice["token"])
        for i, node in enumerate(cluster.nodes)
    ]
    for client in sockets:
        await client.join(conv)
    accepted = refused = 0
    started = time.monotonic()
    for i in range(60):  # alternate nodes, 60 sends in about 2 s (the probe's pattern)
        try:
            await sockets[i % 2].send(conv, f"burst {i}")
            accepted += 1
        except RuntimeError as exc:
            assert "RATE_LIMITED" in str(exc)
            refused += 1
        await asyncio.sleep(0.03)
    elapsed = time.monotonic() - started
    allowed = 20 + 10 * elapsed  # burst + rate x time
    print(f"rate limit with a skewed node: {accepted} of 60 accepted in {elapsed:.2f}s (bucket allows {allowed:.1f})")
    assert accepted <= allowed + 1 and refused > 0

    async with httpx.AsyncClient(base_url=cluster.nodes[0].base_url) as http:
        r = await http.get(
            f"/api/conversations/{conv}/messages",
            params={"limit": 200},
            headers={"Authorization": f"Bearer {alice['token']}"},
        )
    items = r.json()["items"]
    stamps = [datetime.fromisoformat(m["created_at"]) for m in items]
    backwards = sum(1 for a, b in itertools.pairwise(stamps) if b < a)
    ahead = max(stamps) - min(stamps)
    print(f"created_at: {len(items)} messages over both nodes, {backwards} earlier than the one before, span {ahead}")
    assert [m["seq"] for m in items] == list(range(1, accepted + 1))
    assert backwards == 0 and ahead.total_seconds() < SKEW_SECONDS / 2
    for client in sockets:
        await client.close()


@pytest.mark.parametrize("depth", [1_000, 10_000])
async def test_json_nested_thousands_deep_gets_a_4xx_on_rest_and_ws(cluster: Cluster, api: Api, depth: int) -> None:
    nested = '{"email": "a@b.cc", "password": "password-1", "name": ' + "[" * depth + "]" * depth + "}"
    frame = '{"x": ' + "[" * depth + "]" * depth + ', "type": "ping"}'
    user = await api.user()
    async with httpx.AsyncClient(base_url=cluster.nodes[0].base_url) as http:
        unauthenticated = await http.post(
            "/api/auth/register", content=nested, headers={"Content-Type": "application/json"}
        )
        authenticated = await http.post(
            "/api/conversations",
            content=nested.replace('"email"', '"title"'),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {user['token']}"},
        )
    print(f"depth {depth}: REST {unauthenticated.status_code} / {authenticated.status_code}")
    assert 400 <= unauthenticated.status_code < 500 and unauthenticated.json()["error"]["code"] == "VALIDATION"
    assert 400 <= authenticated.status_code < 500
    client = await ChatClient("nested", History()).connect(cluster.nodes[0].ws_url, user["token"])
    await client.send_json({"type": "ping"})
    await client.expect("pong")
    assert client.ws is not None
    await client.ws.send(frame)
    error = await client.expect("error")
    assert error["code"] == "VALIDATION"
    await client.send_json({"type": "ping"})
    await client.expect("pong")  # the socket survived
    await client.close()


async def test_an_invalid_utf8_text_frame_closes_with_1007_without_a_traceback_in_the_log(
    cluster: Cluster, api: Api
) -> None:
    user = await api.user()
    node = cluster.nodes[0]
    logged_before = node.log_path.read_text()
    for _ in range(3):
        async with websockets.connect(
            node.ws_url, additional_headers={"Authorization": f"Bearer {user['token']}"}
        ) as ws:
            await ws.send(b'{"type": "ping"}\xff\xfe', text=True)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1007
    await asyncio.sleep(0.5)
    logged = node.log_path.read_text()[len(logged_before) :]
    print(f"invalid UTF-8: 3 sockets closed with 1007; {logged.count('Traceback')} tracebacks logged")
    assert "Traceback" not in logged and "ERROR" not in logged
