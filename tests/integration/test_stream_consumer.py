"""The shared stream-consumer loop: only what the handler handled is acked; a shared group takes over a
dead consumer's pending entries; a poison entry ends in the dead-letter stream and the rest go on."""

from __future__ import annotations

import asyncio

from domain import events
from infrastructure.bootstrap import Services
from infrastructure.redis import keys, streams
from infrastructure.redis.consumer import StreamConsumer
from infrastructure.redis.streams import StreamEntry
from tests.factories import message_posted

STREAM = keys.events_stream(0)


async def _publish(services: Services, *seqs: int, poison: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    rows = [
        streams.OutboxEntry(
            s, 0, "message_posted", b"{not json" if s in poison else events.encode(message_posted(seq=s))
        )
        for s in seqs
    ]
    await streams.publish(services.redis, rows, maxlen=1000)


def _seq(entry: StreamEntry) -> int:
    event = events.decode(entry.data)
    assert isinstance(event, events.MessagePosted)
    return event.message.seq


def consumer(services: Services, name: str, handler: object, **kw: object) -> StreamConsumer:
    return StreamConsumer(
        services.redis,
        group="test",
        consumer=name,
        streams=[STREAM],
        handler=handler,
        start="0",
        **kw,  # type: ignore[arg-type]
    )


async def test_only_entries_the_handler_reports_are_acked(services: Services) -> None:
    async def even_only(entries: list[StreamEntry]) -> list[StreamEntry]:
        return [e for e in entries if _seq(e) % 2 == 0]

    c = consumer(services, "a", even_only)
    await c.setup()
    await _publish(services, 1, 2, 3, 4)
    await c.read_once(block=None)

    pending = await services.redis.xpending_range(STREAM, "test", min="-", max="+", count=10)
    assert len(pending) == 2


async def test_a_shared_group_claims_a_dead_consumers_pending_entries(services: Services) -> None:
    seen: list[int] = []

    async def record(entries: list[StreamEntry]) -> None:
        seen.extend(_seq(e) for e in entries)

    await consumer(services, "dead", record).setup()
    await _publish(services, 1, 2, 3)
    await services.redis.xreadgroup("test", "dead", {STREAM: ">"}, count=10)  # delivered; then it dies

    survivor = consumer(services, "alive", record, claim_idle_ms=50)
    await survivor.setup()
    await asyncio.sleep(0.1)
    assert await survivor.claim_stale() == 3

    assert seen == [1, 2, 3]
    assert (await services.redis.xpending(STREAM, "test"))["pending"] == 0


async def test_a_poison_entry_goes_to_the_dead_letter_stream_and_the_rest_are_handled(services: Services) -> None:
    handled: list[int] = []

    async def decode_or_refuse(entries: list[StreamEntry]) -> list[StreamEntry]:
        ok = []
        for e in entries:
            try:
                handled.append(_seq(e))
            except Exception:
                continue
            ok.append(e)
        return ok

    c = consumer(services, "a", decode_or_refuse, claim_idle_ms=10, max_deliveries=3)
    await c.setup()
    await _publish(services, 1, 2, 3, poison={2})
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    async with asyncio.timeout(10):
        while not await services.redis.xlen(keys.DEAD_LETTER_STREAM):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    stop.set()
    await task

    assert handled == [1, 3]
    [(_id, dead)] = await services.redis.xrange(keys.DEAD_LETTER_STREAM)
    assert dead[b"data"] == b"{not json" and dead[b"stream"].decode() == STREAM and int(dead[b"deliveries"]) >= 3
    assert (await services.redis.xpending(STREAM, "test"))["pending"] == 0


async def test_a_handler_that_raises_leaves_the_batch_pending(services: Services) -> None:
    calls = 0

    async def down(entries: list[StreamEntry]) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("database down")

    c = consumer(services, "a", down)
    await c.setup()
    await _publish(services, 1)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    async with asyncio.timeout(5):
        while not calls:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    stop.set()
    await task
    assert (await services.redis.xpending(STREAM, "test"))["pending"] == 1


async def test_equal_entry_ids_on_two_shards_are_acked_apart(services: Services) -> None:
    other = keys.events_stream(1)
    for stream, seq in ((STREAM, 1), (other, 2)):  # the same id on two streams, as happens at equal milliseconds
        data = events.encode(message_posted(seq=seq))
        await services.redis.xadd(stream, {"type": "message_posted", "data": data}, id="5-0")

    async def first_shard_only(entries: list[StreamEntry]) -> list[StreamEntry]:
        return [e for e in entries if e.stream == STREAM]

    c = StreamConsumer(
        services.redis, group="test", consumer="a", streams=[STREAM, other], handler=first_shard_only, start="0"
    )
    await c.setup()
    await c.read_once(block=None)

    assert (await services.redis.xpending(STREAM, "test"))["pending"] == 0
    assert (await services.redis.xpending(other, "test"))["pending"] == 1


async def test_idle_consumers_holding_nothing_are_forgotten(services: Services) -> None:
    async def record(entries: list[StreamEntry]) -> None:
        return None

    await consumer(services, "gone", record).setup()
    await services.redis.xreadgroup("test", "gone", {STREAM: ">"}, count=1)  # registers the consumer
    await services.redis.xreadgroup("test", "busy", {STREAM: "0"}, count=1)
    await _publish(services, 1)
    await services.redis.xreadgroup("test", "busy", {STREAM: ">"}, count=1)  # busy holds one pending entry
    alive = consumer(services, "alive", record)
    await asyncio.sleep(0.05)

    assert await alive.forget_idle_consumers(10) == ["gone"]
    names = {c["name"] for c in await services.redis.xinfo_consumers(STREAM, "test")}
    assert names == {b"busy"}
