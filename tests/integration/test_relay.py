"""Flow 2: the outbox relay publishes committed events to the shard streams once, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from domain import events, handlers
from domain.limits import Limits
from infrastructure.bootstrap import Services
from infrastructure.db.tables import outbox, users
from infrastructure.redis import groups, keys, streams
from tests.factories import PostMessageFactory, StartConversationFactory
from workers.outbox_relay import OutboxRelay


async def _user(services: Services) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with services.engine.begin() as conn:
        await conn.execute(sa.insert(users).values(id=user_id, email=f"{user_id}@x.io", name="u", password_hash="x"))
    return user_id


async def _post_many(services: Services, conversations: int, per_conversation: int) -> list[uuid.UUID]:
    owner = await _user(services)
    conv_ids = []
    for _ in range(conversations):
        conv = await handlers.start_conversation(
            StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
        )
        conv_ids.append(conv.id)
    for _ in range(per_conversation):
        await asyncio.gather(
            *(
                handlers.post_message(
                    PostMessageFactory.build(conversation_id=cid, sender_id=owner),
                    services.uow(),
                    services.clock,
                    Limits(),
                )
                for cid in conv_ids
            )
        )
    return conv_ids


async def _stream_events(services: Services) -> list[tuple[str, Any]]:
    out = []
    for stream in streams.all_streams(services.settings.redis.shard_count):
        for _id, fields in await services.redis.xrange(stream):
            out.append((stream, events.decode(fields[b"data"])))
    return out


def _seqs_by_conversation(entries: list[tuple[str, Any]]) -> dict[uuid.UUID, list[int]]:
    seqs: defaultdict[uuid.UUID, list[int]] = defaultdict(list)
    for _stream, event in entries:
        if isinstance(event, events.MessagePosted):
            seqs[event.message.conversation_id].append(event.message.seq)
    return seqs


async def test_relay_publishes_every_event_once_in_seq_order_on_its_shard_and_empties_the_outbox(
    services: Services,
) -> None:
    conv_ids = await _post_many(services, conversations=6, per_conversation=20)
    relay = OutboxRelay(services, batch_size=50)

    published = await relay.drain()

    entries = await _stream_events(services)
    assert published == len(entries) == 6 + 6 * 20  # one ConversationCreated each, then the messages
    assert _seqs_by_conversation(entries) == {cid: list(range(1, 21)) for cid in conv_ids}
    for stream, event in entries:
        shard = events.shard_for(event.conversation_id, services.settings.redis.shard_count)
        assert stream == keys.events_stream(shard)
    async with services.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one() == 0
    assert await relay.relay_once() == 0


async def test_two_relays_draining_at_once_never_publish_an_event_twice_or_out_of_order(services: Services) -> None:
    conv_ids = await _post_many(services, conversations=8, per_conversation=25)

    counts = await asyncio.gather(
        OutboxRelay(services, batch_size=10).drain(), OutboxRelay(services, batch_size=10).drain()
    )

    entries = await _stream_events(services)
    assert sum(counts) == len(entries) == 8 + 8 * 25
    assert _seqs_by_conversation(entries) == {cid: list(range(1, 26)) for cid in conv_ids}


async def test_a_crash_between_xadd_and_delete_republishes_and_nothing_is_lost(services: Services) -> None:
    conv_ids = await _post_many(services, conversations=1, per_conversation=5)
    async with services.engine.begin() as conn:  # publish, then "crash" before deleting: rolled back
        rows = (await conn.execute(sa.select(outbox).order_by(outbox.c.id))).all()
        batch = [streams.OutboxEntry(r.id, r.shard, r.event_type, r.payload) for r in rows]
        await streams.publish(services.redis, batch, maxlen=1000)
        await conn.rollback()

    await OutboxRelay(services).drain()

    seqs = _seqs_by_conversation(await _stream_events(services))[conv_ids[0]]
    assert seqs == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]  # at-least-once: consumers dedup by seq


async def test_the_janitor_removes_groups_of_dead_nodes_only(services: Services) -> None:
    redis, stream = services.redis, keys.events_stream(0)
    for node in ("alive", "dead"):
        await streams.ensure_group(redis, stream, keys.node_group(node))
    await streams.ensure_group(redis, stream, keys.PROJECTOR_GROUP)
    await groups.mark_node_alive(redis, "alive")

    removed = await groups.remove_dead_node_groups(redis, services.settings.redis.shard_count)

    assert removed == [f"{stream} node:dead"]
    names = {g["name"].decode() for g in await redis.xinfo_groups(stream)}
    assert names == {"node:alive", keys.PROJECTOR_GROUP}


async def test_the_stream_report_shows_length_lag_and_pending_per_group(services: Services) -> None:
    await _post_many(services, conversations=1, per_conversation=3)
    shard = events.shard_for(
        events.decode((await _outbox_payloads(services))[0]).conversation_id, services.settings.redis.shard_count
    )
    stream = keys.events_stream(shard)
    await streams.ensure_group(services.redis, stream, "reporting-test", start="0")
    await OutboxRelay(services).drain()
    await services.redis.xreadgroup("reporting-test", "c1", {stream: ">"}, count=2)

    report = {s.stream: s for s in await groups.stream_report(services.redis, services.settings.redis.shard_count)}

    info = report[stream]
    assert info.length == 4
    (group,) = info.groups
    assert (group.name, group.lag, group.pending) == ("reporting-test", 2, 2)
    assert group.consumers[0].name == "c1"
    assert group.behind_seconds >= group.oldest_pending_age_seconds >= 0


async def _outbox_payloads(services: Services) -> list[bytes]:
    async with services.engine.connect() as conn:
        return [r.payload for r in (await conn.execute(sa.select(outbox.c.payload).order_by(outbox.c.id))).all()]
