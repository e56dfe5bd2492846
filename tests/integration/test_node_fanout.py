"""A WS node's consumer group: it claims its own pending entries on restart and recovers lost groups."""

from __future__ import annotations

import asyncio
import uuid

from app.ws.fanout import EventFanout
from app.ws.hub import Hub
from domain import events
from infrastructure.bootstrap import Services
from infrastructure.redis import keys, streams
from tests.factories import message_posted


class RecordingHub(Hub):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[events.Event] = []

    def on_event(self, event: events.Event) -> None:
        self.received.append(event)


def posted(seq: int) -> events.MessagePosted:
    return message_posted(conversation_id=uuid.UUID(int=0), seq=seq)  # shard 0


async def _publish(services: Services, *seqs: int) -> None:
    entries = [streams.OutboxEntry(s, 0, "message_posted", events.encode(posted(s))) for s in seqs]
    await streams.publish(services.redis, entries, maxlen=1000)


async def test_a_restarted_node_claims_and_acks_its_own_pending_entries(services: Services) -> None:
    redis, stream, group = services.redis, keys.events_stream(0), keys.node_group("n1")
    first = EventFanout(redis, RecordingHub(), node_id="n1", shard_count=services.settings.redis.shard_count)
    await first.setup()
    await _publish(services, 1, 2, 3)
    await redis.xreadgroup(group, "n1", {stream: ">"}, count=10)  # delivered, then the process "dies"
    assert (await redis.xpending(stream, group))["pending"] == 3

    hub = RecordingHub()
    await EventFanout(redis, hub, node_id="n1", shard_count=services.settings.redis.shard_count).setup()

    assert [e.message.seq for e in hub.received if isinstance(e, events.MessagePosted)] == [1, 2, 3]
    assert (await redis.xpending(stream, group))["pending"] == 0


async def test_a_node_whose_group_vanished_recreates_it_and_resyncs_its_sockets(services: Services) -> None:
    hub = RecordingHub()
    resyncs: list[bool] = []
    hub.resync_all = lambda: resyncs.append(True)  # type: ignore[method-assign]
    fanout = EventFanout(services.redis, hub, node_id="n2", shard_count=services.settings.redis.shard_count)
    await fanout.setup()
    stop = asyncio.Event()
    task = asyncio.create_task(fanout.run(stop))
    await asyncio.sleep(0.2)

    await services.redis.flushall()  # Redis restarted empty
    await asyncio.sleep(1.5)
    await _publish(services, 7)
    async with asyncio.timeout(5):
        while not hub.received:  # noqa: ASYNC110 - polling the hub the reader fills
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)

    assert resyncs, "local sockets were not told to catch up from Postgres"
    assert [e.message.seq for e in hub.received if isinstance(e, events.MessagePosted)] == [7]
