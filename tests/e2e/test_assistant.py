"""The assistant end to end: two `parley api` nodes, a relay and a `parley worker` (real processes), the
worker's provider the real ``anthropic`` SDK talking to our local Messages-API server."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio

from domain.assistant import answer_client_msg_id
from infrastructure.embedded import EmbeddedRedis
from infrastructure.redis import keys
from tests.e2e.checker import History
from tests.e2e.client import ChatClient
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import running_cluster
from tests.fakes.anthropic_server import Answer, FakeAnthropic, Hang, Status, words

ANSWER = "Sure: the meeting moved to Thursday at ten, in the small room upstairs."
FIRST_TOKEN_TIMEOUT = 1.5
TOTAL_TIMEOUT = 6.0
#: arq retries a job killed mid-run once the longest job timeout (30 s, workers/jobs.py) and 10 s more
#: have passed.
RETRY_WAIT = 30 + 10 + 20


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acluster(
    e2e_database_url: str, e2e_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic
) -> Iterator[Cluster]:
    with running_cluster(
        e2e_database_url,
        e2e_redis,
        tmp_path_factory.mktemp("e2e-assistant-logs"),
        with_worker=True,
        LLM_PROVIDER="anthropic",
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake.base_url,
        LLM_MODEL="claude-test",
        LLM_FIRST_TOKEN_TIMEOUT=str(FIRST_TOKEN_TIMEOUT),
        LLM_TOTAL_TIMEOUT=str(TOTAL_TIMEOUT),
        LLM_RETRIES="2",
        LLM_CONTEXT_MESSAGES="4",
        PARLEY_LIMIT_MESSAGES_PER_SECOND="5000",
        PARLEY_LIMIT_MESSAGE_BURST="5000",
    ) as built:
        wait_for_worker(e2e_redis.url)
        yield built


def wait_for_worker(redis_url: str, timeout: float = 60) -> None:
    """The worker's consumer group exists on every shard (it starts at the end: nothing before it counts)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready = 0
            for shard in range(4):
                with contextlib.suppress(redis.ResponseError):
                    groups = client.xinfo_groups(keys.events_stream(shard))
                    ready += any(g["name"] == keys.ASSISTANT_GROUP.encode() for g in groups)
            if ready == 4:
                return
            time.sleep(0.2)
        raise RuntimeError("parley worker did not set up its consumer group")
    finally:
        client.close()


@pytest.fixture
def script(fake: FakeAnthropic) -> FakeAnthropic:
    fake.reset()
    return fake


class Room:
    """A conversation with the assistant, its members' tokens, REST through node 1."""

    def __init__(self, cluster: Cluster, conversation_id: str, users: list[dict[str, Any]]) -> None:
        self.cluster = cluster
        self.id = conversation_id
        self.users = users

    @classmethod
    async def create(cls, cluster: Cluster, people: int = 2) -> Room:
        users = []
        async with httpx.AsyncClient(base_url=cluster.nodes[0].base_url, timeout=10) as http:
            for i in range(people):
                email = f"ai-{uuid.uuid4().hex[:10]}@example.com"
                r = await http.post(
                    "/api/auth/register", json={"email": email, "password": "pw-123456", "name": f"P{i}"}
                )
                users.append({"id": r.json()["user"]["id"], "token": r.json()["access_token"]})
            r = await http.post(
                "/api/conversations",
                json={"title": "ai", "participant_ids": [u["id"] for u in users[1:]], "assistant": {"enabled": True}},
                headers=auth(users[0]),
            )
            r.raise_for_status()
        return cls(cluster, r.json()["id"], users)

    async def client(self, user: int, node: int, clients: list[ChatClient], *, join: bool = True) -> ChatClient:
        client = await ChatClient(f"u{user}@{node}", History()).connect(
            self.cluster.nodes[node].ws_url, self.users[user]["token"]
        )
        clients.append(client)
        if join:
            await client.join(self.id)
        return client

    async def post(self, text: str, client_msg_id: str | None = None, user: int = 0) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.cluster.nodes[0].base_url, timeout=10) as http:
            return await http.post(
                f"/api/conversations/{self.id}/messages",
                json={"client_msg_id": client_msg_id or uuid.uuid4().hex, "text": text},
                headers=auth(self.users[user]),
            )

    async def history(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.cluster.nodes[1].base_url, timeout=10) as http:
            r = await http.get(f"/api/conversations/{self.id}/messages?limit=200", headers=auth(self.users[0]))
            items: list[dict[str, Any]] = r.json()["items"]
            return items


def auth(user: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['token']}"}


async def reply_frames(client: ChatClient, timeout: float = 20) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``stream`` frames of the next reply, up to its ``stream_end``."""
    deltas: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await client.expect_any({"stream", "stream_end"}, timeout=timeout)
            if frame["type"] == "stream_end":
                return deltas, frame
            deltas.append(frame)


async def frames_until(client: ChatClient, count: int) -> list[dict[str, Any]]:
    return [await client.expect("stream") for _ in range(count)]


async def test_every_node_streams_the_same_contiguous_answer_that_is_stored_with_the_servers_usage(
    acluster: Cluster, script: FakeAnthropic, clients: list[ChatClient]
) -> None:
    room = await Room.create(acluster)
    asker, other = await room.client(0, 0, clients), await room.client(1, 1, clients)
    script.script(Answer(chunks=words(ANSWER), input_tokens=91, output_tokens=13, delay=0.01))
    await room.post("hi both")

    await asker.send(room.id, "@assistant when is the meeting?")
    seen = [await reply_frames(c) for c in (asker, other)]

    stored = (await room.history())[-1]
    for deltas, end in seen:
        assert [d["index"] for d in deltas] == list(range(len(words(ANSWER))))
        assert "".join(d["delta"] for d in deltas) == ANSWER
        assert end["cancelled"] is False and "error" not in end
        assert end["usage"] == {"input_tokens": 91, "output_tokens": 13}
        assert end["message_id"] == stored["id"] and end["seq"] == stored["seq"]
    assert stored["role"] == "assistant" and stored["text"] == ANSWER
    body = script.requests[0].body
    assert body["messages"][-1]["content"] == "P0: hi both\n\nP0: @assistant when is the meeting?"
    assert len(script.requests) == 1


async def test_recall_brings_earlier_messages_of_the_conversation_and_never_another_conversations_canary(
    acluster: Cluster, script: FakeAnthropic, clients: list[ChatClient], e2e_database_url: str
) -> None:
    mine, theirs = await Room.create(acluster, people=1), await Room.create(acluster, people=1)
    canary = f"CANARY-{uuid.uuid4().hex[:8]}: the launch code for project Zephyr is 9999."
    await theirs.post(canary)
    await mine.post("The launch code for project Zephyr is 7431.")
    for filler in ("lunch at noon?", "sure, the usual place", "bring the slides", "and the projector"):
        await mine.post(filler)
    await embedded(e2e_database_url, [mine.id, theirs.id], count=6)  # the worker embeds every message
    watcher = await mine.client(0, 1, clients)
    script.reset()

    await mine.post("what was the launch code for project Zephyr?")
    await reply_frames(watcher)

    body = script.requests[0].body
    assert body["messages"][-1]["content"].endswith("what was the launch code for project Zephyr?")
    assert "lunch at noon?" not in body["messages"][-1]["content"]  # outside the 4 most recent ...
    assert "7431" in body["system"]  # ... but recalled by meaning
    assert all("CANARY" not in r.text and "9999" not in r.text for r in script.requests)


async def embedded(database_url: str, conversation_ids: list[str], *, count: int, timeout: float = 30) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with asyncio.timeout(timeout):
            while True:
                done = await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE conversation_id = ANY($1::uuid[]) AND embedding IS NOT NULL",
                    [uuid.UUID(c) for c in conversation_ids],
                )
                if done >= count:
                    return
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_cancel_from_the_other_node_ends_the_reply_for_everyone_and_closes_the_provider_call(
    acluster: Cluster, script: FakeAnthropic, clients: list[ChatClient]
) -> None:
    room = await Room.create(acluster)
    asker, canceller = await room.client(0, 0, clients), await room.client(1, 1, clients)
    script.script(Answer(chunks=[f" w{i}" for i in range(500)], delay=0.02))

    await asker.send(room.id, "@assistant count slowly")
    first = await frames_until(canceller, 5)
    await canceller.send_json({"type": "cancel", "reply_id": first[0]["reply_id"]})
    cancelled_at = time.monotonic()
    ends = [await reply_frames(c) for c in (asker, canceller)]

    for _deltas, end in ends:
        assert end["cancelled"] is True and end["reply_id"] == first[0]["reply_id"]
    await asyncio.sleep(0.5)
    assert all(f["type"] not in {"stream", "stream_end"} for c in (asker, canceller) for f in drain(c))
    request = script.requests[0]
    assert request.closed_at is not None and request.closed_at - cancelled_at < 1.0
    assert len(request.delta_sent_at) < 500
    stored = (await room.history())[-1]
    assert stored["id"] == ends[0][1]["message_id"]


def drain(client: ChatClient) -> list[dict[str, Any]]:
    out = []
    while not client.frames.empty():
        out.append(client.frames.get_nowait())
    return out


async def test_resume_on_the_other_node_gives_exactly_the_deltas_from_the_index_then_the_end(
    acluster: Cluster, script: FakeAnthropic, clients: list[ChatClient]
) -> None:
    room = await Room.create(acluster)
    chunks = [f" part{i}" for i in range(60)]
    script.script(Answer(chunks=chunks, delay=0.03))
    reader = await room.client(1, 0, clients)
    await room.post("@assistant tell me a long story")

    before = await frames_until(reader, 10)
    await reader.close()
    resumed = await room.client(1, 1, clients, join=False)
    await resumed.send_json({"type": "resume", "reply_id": before[0]["reply_id"], "from_index": 10})
    after, end = await reply_frames(resumed)

    assert [d["index"] for d in before] == list(range(10))
    assert [d["index"] for d in after] == list(range(10, 60))
    assert "".join(d["delta"] for d in before + after) == "".join(chunks)
    assert end["cancelled"] is False and end["message_id"] is not None


async def test_a_redelivered_trigger_and_a_retried_post_make_one_provider_request_and_one_answer(
    acluster: Cluster, script: FakeAnthropic, clients: list[ChatClient], e2e_redis: EmbeddedRedis
) -> None:
    room = await Room.create(acluster, people=1)
    watcher = await room.client(0, 1, clients)
    first = await room.post("only once please", client_msg_id="trigger-1")
    _, end = await reply_frames(watcher)

    await redeliver(e2e_redis, room.id, first.json()["id"])
    again = await room.post("only once please", client_msg_id="trigger-1")
    await asyncio.sleep(2.0)

    assert (first.status_code, again.status_code) == (201, 200)
    assert len(script.requests) == 1
    answers = [m for m in await room.history() if m["role"] == "assistant"]
    assert [a["id"] for a in answers] == [end["message_id"]]


async def redeliver(redis_server: EmbeddedRedis, conversation_id: str, message_id: str) -> None:
    """XADD the trigger's ``message_posted`` entry again, as a relay that crashed before its commit would."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        for shard in range(4):
            for _id, fields in await client.xrange(keys.events_stream(shard)):
                if fields.get(b"type") == b"message_posted" and message_id.encode() in fields[b"data"]:
                    await client.xadd(keys.events_stream(shard), fields)
                    return
        raise AssertionError("the trigger's event is not in any shard stream")
    finally:
        await client.aclose()


async def test_a_worker_killed_mid_answer_is_completed_by_the_retry_and_stored_once(
    acluster: Cluster, script: FakeAnthropic, clients: list[ChatClient], e2e_database_url: str
) -> None:
    room = await Room.create(acluster, people=1)
    script.script(Answer(chunks=[f" a{i}" for i in range(100)], delay=0.05), Answer(chunks=words(ANSWER)))
    watcher = await room.client(0, 1, clients)
    await room.post("answer despite crashes")
    first = await frames_until(watcher, 5)
    assert acluster.worker is not None

    acluster.worker.kill()
    acluster.worker.start()
    deltas, end = await reply_frames(watcher, timeout=RETRY_WAIT)

    # Completed by arq's retry: attempt 2 streams from index 0 (the client drops attempt 1's text), and
    # exactly one answer is stored.
    assert end["attempt"] == 2 and "error" not in end
    assert "".join(d["delta"] for d in deltas if d["attempt"] == 2) == ANSWER
    assert [d["index"] for d in deltas if d["attempt"] == 2] == list(range(len(words(ANSWER))))
    stored = await assistant_answers(e2e_database_url, room.id, first[0]["reply_id"])
    assert [r["id"] for r in stored] == [uuid.UUID(end["message_id"])]
    assert [m["text"] for m in await room.history() if m["role"] == "assistant"] == [ANSWER]


async def assistant_answers(database_url: str, conversation_id: str, reply_id: str) -> list[Any]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return list(
            await conn.fetch(
                "SELECT id FROM messages WHERE conversation_id = $1 AND client_msg_id = $2",
                uuid.UUID(conversation_id),
                answer_client_msg_id(uuid.UUID(reply_id)),
            )
        )
    finally:
        await conn.close()


async def test_provider_failures_end_the_reply_with_an_error_the_client_can_show(
    acluster: Cluster, script: FakeAnthropic, clients: list[ChatClient]
) -> None:
    room = await Room.create(acluster, people=1)
    watcher = await room.client(0, 1, clients)

    script.script(Status(529), Answer(chunks=words("after one retry")))
    await room.post("first")
    retried, retried_end = await reply_frames(watcher)
    script.script(Hang())
    await room.post("second")
    _, hang_end = await reply_frames(watcher, timeout=FIRST_TOKEN_TIMEOUT + 10)
    script.script(Answer(chunks=["one", " two", " three", " four"], disconnect_after=2))
    await room.post("third")
    broken, broken_end = await reply_frames(watcher, timeout=TOTAL_TIMEOUT + 10)

    assert "".join(d["delta"] for d in retried) == "after one retry" and "error" not in retried_end
    assert hang_end["error"]["code"] == "TIMEOUT" and "message_id" not in hang_end
    assert [d["delta"] for d in broken] == ["one", " two"]
    assert broken_end["error"]["code"] == "UNAVAILABLE" and "message_id" not in broken_end
    assert len(script.requests) == 4  # 529, its retry, the hang (a timeout is not retried), the broken one
    assert [m["text"] for m in await room.history() if m["role"] == "assistant"] == ["after one retry"]
