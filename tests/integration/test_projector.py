"""The projector in-process over real PostgreSQL and Redis: read models equal a recomputation from the write
tables and a rebuild, whatever the delivery order; poison and trimmed entries; usage statistics."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from datetime import UTC, datetime

from domain import commands, events, handlers
from infrastructure.bootstrap import Services
from infrastructure.db import outbox as outbox_rows
from infrastructure.read_cursor import apply_read_cursor
from infrastructure.redis import keys, streams
from infrastructure.redis.consumer import parse
from infrastructure.redis.streams import StreamEntry
from tests.integration.conftest import Project
from tests.read_side import (
    expected_lists,
    post_burst,
    projected_lists,
    seed_rooms,
    seed_users,
    snapshot,
    totals_agree,
)
from workers import projector as projector_module
from workers.outbox_relay import OutboxRelay
from workers.projector import Projector
from workers.projector_rebuild import rebuild


async def _all_entries(services: Services) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for stream in streams.all_streams(services.settings.redis.shard_count):
        entries, _ = parse([(stream, await services.redis.xrange(stream))])
        out += entries
    return out


async def _seeded(services: Services, *, rooms: int = 6, members: int = 4, messages: int = 120) -> None:
    users = await seed_users(services.pg, 12)
    await post_burst(services, await seed_rooms(services, users, rooms=rooms, members=members), messages=messages)
    await OutboxRelay(services).drain()


async def test_duplicated_and_reordered_deliveries_end_exactly_as_a_rebuild(services: Services) -> None:
    await _seeded(services)
    entries = await _all_entries(services)
    shuffled = random.sample(entries, len(entries))
    projector = Projector(services, consumer_name="p")

    for start in range(0, len(shuffled), 17):  # out of order across and within shards, in small batches
        await projector.handle(shuffled[start : start + 17])
    await projector.handle(entries)  # and everything once more, in order

    assert await projected_lists(services.pg) == await expected_lists(services.pg)
    assert await totals_agree(services.pg)
    projected = await snapshot(services.pg)
    await rebuild(services)
    assert await snapshot(services.pg) == projected


async def test_reading_moves_the_readers_count_at_once_and_own_messages_are_never_unread(
    services: Services, project: Project
) -> None:
    await _seeded(services, rooms=3, members=3, messages=40)
    await project()
    row = await services.pg.fetchrow(
        "SELECT user_id, conversation_id, last_seq FROM read_conversation_list WHERE unread_count > 0 LIMIT 1"
    )
    assert row is not None
    cmd = commands.MarkRead(conversation_id=row["conversation_id"], user_id=row["user_id"], seq=row["last_seq"])
    await handlers.mark_read(cmd, services.uow(), services.clock)
    assert await apply_read_cursor(services, row["conversation_id"], row["user_id"]) == 0

    senders = await services.pg.fetch(
        """SELECT r.unread_count FROM read_conversation_list r JOIN messages m
           ON m.conversation_id = r.conversation_id AND m.seq = r.last_seq AND m.sender_id = r.user_id"""
    )
    assert senders and {s["unread_count"] for s in senders} == {0}
    await project()
    assert await projected_lists(services.pg) == await expected_lists(services.pg)
    projected = await snapshot(services.pg)
    await rebuild(services)
    assert await snapshot(services.pg) == projected


async def test_a_poison_event_is_dead_lettered_and_the_events_after_it_are_projected(services: Services) -> None:
    users = await seed_users(services.pg, 4)
    rooms = await seed_rooms(services, users, rooms=1, members=3)
    await post_burst(services, rooms, messages=3)
    await OutboxRelay(services).drain()
    poison = outbox_rows.OutboxRow(0, 0, "message_posted", b'{"type":"message_posted","oops":1}')
    await streams.publish(services.redis, [poison], maxlen=1000)
    await post_burst(services, rooms, messages=3)
    await OutboxRelay(services).drain()

    fast = dataclasses.replace(services.settings.redis, claim_idle_ms=20, max_deliveries=3)
    services.settings = dataclasses.replace(services.settings, redis=fast)
    projector = Projector(services, consumer_name="p")
    task = asyncio.create_task(projector.run())
    try:
        async with asyncio.timeout(15):
            while not await services.redis.xlen(keys.DEAD_LETTER_STREAM):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        projector.stop()
        await task

    [(_id, dead)] = await services.redis.xrange(keys.DEAD_LETTER_STREAM)
    assert dead[b"group"] == keys.PROJECTOR_GROUP.encode() and int(dead[b"deliveries"]) >= 3
    assert await projected_lists(services.pg) == await expected_lists(services.pg)


async def test_entries_trimmed_away_are_recovered_from_postgresql(services: Services) -> None:
    await _seeded(services, rooms=2, members=3, messages=30)
    entries = await _all_entries(services)
    posted = [e for e in entries if e.event_type == "message_posted"]
    lost_middle, lost_tail = posted[5], posted[-1]
    for gone in (lost_middle, lost_tail):
        await services.redis.xdel(gone.stream, gone.entry_id)  # as MAXLEN trimming would
    projector = Projector(services, consumer_name="p")
    await projector.handle([e for e in entries if e not in (lost_middle, lost_tail)])
    projector_module.SWEEP_MIN_AGE_SECONDS = 0.0  # the tail's write is old enough to count as lost
    try:
        await projector.sweep()
    finally:
        projector_module.SWEEP_MIN_AGE_SECONDS = 30.0

    assert await projected_lists(services.pg) == await expected_lists(services.pg)


async def test_assistant_usage_is_counted_once_per_event(services: Services, project: Project) -> None:
    users = await seed_users(services.pg, 3)
    rooms = await seed_rooms(services, users, rooms=1, members=3)
    (cid,) = rooms
    usage = events.AssistantUsageRecorded(
        event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), conversation_id=cid, user_id=users[0].id,
        provider="anthropic", model="claude-test", input_tokens=100, output_tokens=40, cost=0.0123,
    )  # fmt: skip
    row = outbox_rows.OutboxRow(0, events.shard_for(cid, 4), "assistant_usage_recorded", events.encode(usage))
    await streams.publish(services.redis, [row, row], maxlen=1000)  # delivered twice
    await project()

    stats = await services.pg.fetch("SELECT * FROM stats_conversation_daily WHERE conversation_id = $1", cid)
    assert [(s["llm_calls"], s["input_tokens"], s["output_tokens"], float(s["cost_usd"])) for s in stats] == [
        (1, 100, 40, 0.0123)
    ]
