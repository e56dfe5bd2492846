"""Flow 5, `parley worker` in-process: posted messages reach the embedding column through the relay, the
`assistant` consumer group and arq, once each, with the real local model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
import sqlalchemy as sa

from domain import handlers
from domain.limits import Limits
from infrastructure.bootstrap import Services
from infrastructure.db.tables import users
from infrastructure.embeddings.provider import EmbeddingProvider, Vector
from infrastructure.redis import keys, streams
from tests.embedding_audit import audited, writes_per_message  # noqa: F401 (audited is a fixture)
from tests.factories import PostMessageFactory, StartConversationFactory
from workers.outbox_relay import OutboxRelay
from workers.worker import Worker

pytestmark = pytest.mark.timeout(90)


class CountingProvider:
    """The real provider, counting the texts it was asked to embed (instrumentation, not a fake)."""

    def __init__(self, inner: EmbeddingProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts: list[str] = []
        self.calls = 0

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def load(self) -> None:
        await self.inner.load()

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.calls += 1
        self.texts.extend(texts)
        return await self.inner.embed(texts)

    async def close(self) -> None:
        await self.inner.close()


async def post(services: Services, texts: list[str]) -> list[uuid.UUID]:
    owner = uuid.uuid4()
    async with services.engine.begin() as conn:
        await conn.execute(sa.insert(users).values(id=owner, email=f"{owner}@x.io", name="u", password_hash="x"))
    conv = await handlers.start_conversation(
        StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
    )
    ids = []
    for text in texts:
        result = await handlers.post_message(
            PostMessageFactory.build(conversation_id=conv.id, sender_id=owner, text=text),
            services.uow(),
            services.clock,
            Limits(),
        )
        ids.append(result.message.id)
    return ids


async def wait_until_embedded(services: Services, ids: list[uuid.UUID], timeout: float = 45) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        missing = await services.pg.fetchval(
            "SELECT count(*) FROM messages WHERE id = ANY($1::uuid[]) AND embedding IS NULL", ids
        )
        if missing == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{missing} of {len(ids)} messages still without a vector")


async def wait_until_group_idle(services: Services, timeout: float = 20) -> None:
    """Every entry of every shard delivered to the assistant group and acked."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        busy = 0
        for stream in streams.all_streams(services.settings.redis.shard_count):
            for group in await services.redis.xinfo_groups(stream):
                if group["name"] == keys.ASSISTANT_GROUP.encode():
                    busy += int(group["pending"]) + int(group.get("lag") or 0)
        if busy == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the assistant group still has undelivered or unacked entries")


@pytest.fixture
async def counting(services: Services) -> CountingProvider:
    from infrastructure.embeddings.provider import Embedder, build_provider

    inner = build_provider(services.settings.embeddings)
    assert inner is not None
    provider = CountingProvider(inner)
    services.embeddings = Embedder(services.settings.embeddings, provider=provider)
    return provider


@pytest.fixture
async def running(services: Services, counting: CountingProvider) -> AsyncIterator[Worker]:
    relay = OutboxRelay(services, poll_seconds=0.2)
    worker = Worker(services, consumer_name="test-worker", sweep_every=3600)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(worker.run())]
    await services.embeddings.ready()
    await asyncio.sleep(0.5)  # the worker creates its consumer groups at "$" before anything is posted
    yield worker
    relay.stop()
    worker.stop()
    await asyncio.gather(*tasks)


async def test_every_posted_message_gets_the_models_vector(
    services: Services, running: Worker, counting: CountingProvider
) -> None:
    texts = ["the invoice is overdue", "see you at the beach on sunday", "the build is red again"]
    ids = await post(services, texts)

    await wait_until_embedded(services, ids)

    rows = await services.pg.fetch("SELECT id, embedding::text AS v FROM messages WHERE id = ANY($1::uuid[])", ids)
    stored = {r["id"]: np.array([float(x) for x in r["v"].strip("[]").split(",")]) for r in rows}
    expected = await counting.inner.embed(texts)
    for mid, vector in zip(ids, expected, strict=True):
        assert np.abs(stored[mid] - np.array(vector)).max() < 1e-6


@pytest.mark.usefixtures("audited")
async def test_a_re_delivered_message_event_is_embedded_once(
    services: Services, running: Worker, counting: CountingProvider
) -> None:
    ids = await post(services, ["deliver me twice", "and me once"])
    await wait_until_embedded(services, ids)
    await wait_until_group_idle(services)
    texts_before = list(counting.texts)

    # Re-publish every entry of every shard, byte for byte, as a relay crash after XADD would.
    for stream in streams.all_streams(services.settings.redis.shard_count):
        for _entry_id, fields in await services.redis.xrange(stream):
            await services.redis.xadd(stream, fields)
    await wait_until_group_idle(services)
    await asyncio.sleep(0.5)  # let any wrongly queued job run

    assert counting.texts == texts_before
    assert sorted(texts_before) == ["and me once", "deliver me twice"]
    assert await writes_per_message(services) == {mid: 1 for mid in ids}


async def test_busy_streams_are_embedded_in_batches(
    services: Services, running: Worker, counting: CountingProvider
) -> None:
    ids = await post(services, [f"message number {i} about topic {i % 7}" for i in range(120)])

    await wait_until_embedded(services, ids)

    assert len(counting.texts) == 120
    assert counting.calls < 60, f"{counting.calls} model calls for 120 messages"


async def test_the_sweep_embeds_messages_the_stream_never_brought(
    services: Services, counting: CountingProvider
) -> None:
    ids = await post(services, ["posted while no worker ran", "and its events were trimmed"])
    for stream in streams.all_streams(services.settings.redis.shard_count):
        await services.redis.delete(stream)
    worker = Worker(services, sweep_after=0)

    assert await worker.sweep() == 2

    await wait_until_embedded(services, ids, timeout=1)
