"""The read side with real processes (two API nodes, a relay, projectors) on a database and Redis of its own:
lists and unread counts equal the write tables after bursts, crashes and redelivery; projectors share the
work; operators see the lag; /metrics parses; list changes reach every socket of a user."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from infrastructure.bootstrap import asyncpg_dsn
from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, start_redis
from infrastructure.redis import keys, streams
from infrastructure.settings import DatabaseSettings, Settings
from tests.conftest import TEST_JWT_SECRET, migrated_database
from tests.e2e.checker import History
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster
from tests.read_side import expected_lists, projected_lists, snapshot, totals_agree

ADMIN_EMAIL = "read-side-admin@example.com"
SHARDS = 4


@pytest.fixture(scope="module")
def read_database_url(postgres: EmbeddedPostgres | None, database_url: str) -> str:
    if postgres is None:
        pytest.skip("needs the suite's embedded PostgreSQL for a database of its own")
    return migrated_database(postgres, database_url, f"parley_e2e_read_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def read_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path_factory.mktemp("read-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(
    read_database_url: str, read_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    built = Cluster.build(
        database_url=read_database_url,
        redis_url=read_redis.url,
        log_dir=tmp_path_factory.mktemp("read-logs"),
        jwt_secret=TEST_JWT_SECRET,
        projectors=1,
        PARLEY_SHARDS=str(SHARDS),
        PARLEY_CLAIM_IDLE_MS="1500",
        PARLEY_MAX_DELIVERIES="3",
        PARLEY_ADMIN_EMAILS=ADMIN_EMAIL,
        PARLEY_LIMIT_MESSAGES_PER_SECOND="5000",
        PARLEY_LIMIT_MESSAGE_BURST="5000",
    )
    built.start()
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture
async def pool(read_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    settings = Settings(database=DatabaseSettings(url=read_database_url))
    created = await asyncpg.create_pool(asyncpg_dsn(settings), min_size=1, max_size=4)
    yield created
    await created.close()


@pytest.fixture
async def redis(read_redis: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(read_redis.url)
    yield client
    await client.aclose()


def _parley(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONUNBUFFERED": "1", "PARLEY_LOG_LEVEL": "info"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=120, check=True
    )


async def _projector_idle(redis: Redis) -> bool:
    for stream in streams.all_streams(SHARDS):
        for group in await redis.xinfo_groups(stream):
            if group["name"].decode() == keys.PROJECTOR_GROUP and (group["pending"] or group["lag"]):
                return False
    return True


async def _settle(pool: asyncpg.Pool, redis: Redis, timeout: float = 30) -> float:
    """Wait until the outbox is empty, the projector group has nothing pending or undelivered, and every
    list equals the write tables; returns the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            if (
                await pool.fetchval("SELECT count(*) FROM outbox") == 0
                and await _projector_idle(redis)
                and await projected_lists(pool) == await expected_lists(pool)
            ):
                return time.monotonic() - started
            await asyncio.sleep(0.05)


async def _rooms(api: Api, *, users: int, rooms: int, members: int) -> tuple[list[dict[str, Any]], dict[str, list]]:
    people = [await api.user() for _ in range(users)]  # one at a time: Argon2 is slow on a busy machine
    out: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rooms):
        chosen = random.sample(people, members)
        out[await api.conversation(chosen[0], *chosen[1:])] = chosen
    return people, out


async def _burst(base_url: str, rooms: dict[str, list[dict[str, Any]]], count: int, *, concurrency: int = 16) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        queue = [random.choice(list(rooms)) for _ in range(count)]

        async def sender() -> None:
            while queue:
                cid = queue.pop()
                author = random.choice(rooms[cid])
                r = await http.post(
                    f"/api/conversations/{cid}/messages",
                    json={"client_msg_id": uuid.uuid4().hex, "text": f"burst {uuid.uuid4().hex[:8]}"},
                    headers={"Authorization": f"Bearer {author['token']}"},
                )
                assert r.status_code == 201, r.text

        await asyncio.gather(*(sender() for _ in range(concurrency)))


async def _rebuild_equals_projection(cluster: Cluster, pool: asyncpg.Pool) -> None:
    projected = await snapshot(pool)
    result = await asyncio.to_thread(_parley, cluster, "projections", "rebuild")
    assert "rebuild: " in result.stderr  # not a terminal: progress as log lines
    assert await snapshot(pool) == projected


async def test_a_burst_with_a_projector_killed_mid_batch_ends_as_the_write_tables_and_a_rebuild(
    cluster: Cluster, pool: asyncpg.Pool, redis: Redis
) -> None:
    api = Api(cluster.nodes[0].base_url)
    people, rooms = await _rooms(api, users=12, rooms=20, members=5)
    await _burst(cluster.nodes[0].base_url, rooms, 150)
    print(f"lists equal the write tables {await _settle(pool, redis):.2f}s after the last ack (no crash)")

    burst = asyncio.create_task(_burst(cluster.nodes[1].base_url, rooms, 400))
    await asyncio.sleep(1.0)
    cluster.projectors[0].kill()  # mid-batch: entries delivered to it stay pending
    await burst
    cluster.projectors[0].start()  # same consumer name: claims its own pending entries at start
    await _settle(pool, redis)
    assert await totals_agree(pool)

    # Every member sees it through the API too, and reading moves their count at once.
    expected = {(str(r[0]), str(r[1])): r[4] for r in await expected_lists(pool)}
    async with httpx.AsyncClient(base_url=cluster.nodes[1].base_url, timeout=10) as http:
        for person in people:
            auth = {"Authorization": f"Bearer {person['token']}"}
            listed = (await http.get("/api/conversations?limit=200", headers=auth)).json()["items"]
            unread = (await http.get("/api/unread", headers=auth)).json()
            mine = {c: n for (u, c), n in expected.items() if u == person["id"]}
            assert {c["id"]: c["unread_count"] for c in listed} == mine
            assert unread["total"] == sum(mine.values())
        reader = next(p for p in people if any(n for (u, _c), n in expected.items() if u == p["id"]))
        cid = next(c for (u, c), n in expected.items() if u == reader["id"] and n)
        auth = {"Authorization": f"Bearer {reader['token']}"}
        last = (await http.get(f"/api/conversations/{cid}", headers=auth)).json()["last_seq"]
        moved = await http.put(f"/api/conversations/{cid}/read", json={"seq": last}, headers=auth)
        assert moved.json()["unread_count"] == 0
        assert (await http.get("/api/unread", headers=auth)).json()["conversations"].get(cid) is None

    # The same events again, in reverse order across and within shards: nothing changes.
    before = await snapshot(pool)
    for stream in streams.all_streams(SHARDS):
        for _id, fields in reversed(await redis.xrange(stream)):
            await redis.xadd(stream, fields)
    await _settle(pool, redis)
    assert await snapshot(pool) == before
    await _rebuild_equals_projection(cluster, pool)


def _events_projected(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "parley_projector_events"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == "applied"
    )


async def test_two_projectors_share_the_work_and_the_survivor_finishes_a_killed_ones_entries(
    cluster: Cluster, pool: asyncpg.Pool, redis: Redis
) -> None:
    cluster.projectors[0].stop()
    pair = [cluster.projector("projector-a"), cluster.projector("projector-b")]
    cluster.projectors += pair
    for process in pair:
        process.start()
    api = Api(cluster.nodes[0].base_url)
    _people, rooms = await _rooms(api, users=10, rooms=20, members=5)
    await _burst(cluster.nodes[0].base_url, rooms, 300)
    await _settle(pool, redis)
    ports = [int(p.env["PARLEY_METRICS_PORT"]) for p in pair]
    assert all(_events_projected(port) > 0 for port in ports), "both projectors took a share"

    burst = asyncio.create_task(_burst(cluster.nodes[1].base_url, rooms, 300))
    await asyncio.sleep(0.8)
    pair[0].kill()
    await burst
    await _settle(pool, redis)  # the survivor claimed the dead one's pending entries after 1.5 s idle
    assert await totals_agree(pool)
    await _rebuild_equals_projection(cluster, pool)
    pair[1].stop()
    cluster.projectors[0].start()


async def test_a_poison_entry_is_dead_lettered_and_later_events_are_projected(
    cluster: Cluster, pool: asyncpg.Pool, redis: Redis
) -> None:
    api = Api(cluster.nodes[0].base_url)
    _people, rooms = await _rooms(api, users=4, rooms=1, members=3)
    await redis.xadd(keys.events_stream(0), {"type": "message_posted", "data": b"\x00 not an event"})
    await _burst(cluster.nodes[0].base_url, rooms, 10)
    await _settle(pool, redis)
    async with asyncio.timeout(20):
        while not await redis.xlen(keys.DEAD_LETTER_STREAM):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    [(_id, dead)] = await redis.xrange(keys.DEAD_LETTER_STREAM)
    assert dead[b"data"] == b"\x00 not an event" and dead[b"group"] == b"projector"


async def _admin(api: Api) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        r = await http.post("/api/auth/register", json={"email": ADMIN_EMAIL, "password": "password-1", "name": "A"})
        if r.status_code == 409:
            r = await http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": "password-1"})
        r.raise_for_status()
        return {"id": r.json()["user"]["id"], "token": r.json()["access_token"]}


async def _relayed(pool: asyncpg.Pool) -> None:
    async with asyncio.timeout(20):
        while await pool.fetchval("SELECT count(*) FROM outbox"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _projector_report(base_url: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        r = await http.get("/api/admin/streams", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        report: dict[str, Any] = r.json()
        return report


async def test_operators_see_the_projector_lag_grow_while_it_is_stopped_and_drain_after_restart(
    cluster: Cluster, pool: asyncpg.Pool, redis: Redis
) -> None:
    api = Api(cluster.nodes[0].base_url)
    admin, someone = await _admin(api), await api.user()
    _people, rooms = await _rooms(api, users=6, rooms=3, members=3)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        for path in ("/api/admin/streams", "/api/admin/stats"):
            assert (await http.get(path)).status_code == 401
            assert (await http.get(path, headers={"Authorization": f"Bearer {someone['token']}"})).status_code == 403
    await _settle(pool, redis)
    cluster.projectors[0].stop()

    await _burst(api.base_url, rooms, 20)
    await _relayed(pool)
    first = (await _projector_report(api.base_url, admin["token"]))["projector"]
    await _burst(api.base_url, rooms, 20)
    await asyncio.sleep(1.1)
    await _relayed(pool)
    second = (await _projector_report(api.base_url, admin["token"]))["projector"]
    assert second["lag"] > first["lag"] >= 20
    assert second["projection_lag_seconds"] >= 1.0
    cli = json.loads((await asyncio.to_thread(_parley, cluster, "streams", "--json")).stdout)
    assert cli["projector"]["lag"] >= second["lag"]
    assert "projector: lag" in (await asyncio.to_thread(_parley, cluster, "streams")).stdout

    cluster.projectors[0].start()
    await _settle(pool, redis)
    drained = (await _projector_report(api.base_url, admin["token"]))["projector"]
    assert (drained["lag"], drained["pending"]) == (0, 0)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        stats = await http.get("/api/admin/stats", headers={"Authorization": f"Bearer {admin['token']}"})
    assert stats.status_code == 200 and sum(d["messages"] for d in stats.json()["days"]) >= 40


async def test_metrics_on_an_api_node_parse_and_carry_stream_outbox_projector_and_websocket_metrics(
    cluster: Cluster,
) -> None:
    node = cluster.nodes[1]
    api = Api(node.base_url)
    user = await api.user()
    client = await ChatClient("m", History()).connect(node.ws_url, user["token"])
    await client.send_json({"type": "ping"})
    await client.expect("pong")
    async with httpx.AsyncClient(base_url=node.base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    await client.close()

    names = {family.name for family in text_string_to_metric_families(text)}
    for name in (
        "parley_stream_length",
        "parley_stream_group_lag",
        "parley_stream_group_pending",
        "parley_stream_dead_letter_entries",
        "parley_outbox_backlog",
        "parley_outbox_oldest_seconds",
        "parley_projection_lag_seconds",
        "parley_projector_group_pending",
        "parley_ws_connections",
        "parley_ws_frames_in",
        "parley_ws_frames_out",
        "parley_ws_errors",
    ):
        assert name in names, name


async def test_list_changes_reach_every_socket_of_a_user_joined_or_not(cluster: Cluster) -> None:
    api = Api(cluster.nodes[0].base_url)
    reader, writer = await api.user(), await api.user()
    cid = await api.conversation(writer, reader)
    sockets = [
        await ChatClient(f"r{i}", History()).connect(node.ws_url, reader["token"])
        for i, node in enumerate(cluster.nodes)
    ]
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            r = await http.post(
                f"/api/conversations/{cid}/messages",
                json={"client_msg_id": "x", "text": "news"},
                headers={"Authorization": f"Bearer {writer['token']}"},
            )
            seq = r.json()["seq"]
            for socket in sockets:
                frame = await _conversation_frame(socket, cid, lambda f: (f["last_message"] or {}).get("seq") == seq)
                assert frame["unread_count"] == 1 and frame["last_message"]["preview"] == "news"
            await http.put(
                f"/api/conversations/{cid}/read",
                json={"seq": seq},
                headers={"Authorization": f"Bearer {reader['token']}"},
            )
            for socket in sockets:
                await _conversation_frame(socket, cid, lambda f: f["unread_count"] == 0)
    finally:
        for socket in sockets:
            await socket.close()


async def _conversation_frame(socket: ChatClient, cid: str, match: Any) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            frame = await socket.expect("conversation")
            if frame["id"] == cid and match(frame):
                return frame
