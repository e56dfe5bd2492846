"""The node's consumers: durable events through the node's own consumer group on every shard stream,
ephemeral signals (typing, presence) from the small capped signals stream, and conversation-list
changes from the projector (``parley:list-changes``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from datetime import UTC, datetime

import msgspec
from prometheus_client import Counter
from redis.asyncio import Redis

from app.ws import frames, metrics
from app.ws.hub import Hub
from domain import events
from infrastructure.db import read_models, views
from infrastructure.redis import keys, list_changes, streams
from infrastructure.redis.broadcast import BroadcastReader
from infrastructure.redis.consumer import StreamConsumer

log = logging.getLogger("parley.ws.fanout")

#: The signals stream is for live presence/typing only; a short cap is enough.
SIGNALS_MAXLEN = 10_000

EVENTS_DELIVERED = Counter("parley_ws_events_total", "Durable events consumed by this WS node", ["type"])
#: ``EVENTS_DELIVERED.labels`` looked up once per event type (3.5 µs a call, against 1 µs for the ``inc``).
_delivered = functools.cache(EVENTS_DELIVERED.labels)


class Signal(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    kind: str  # "typing" | "presence"
    user_id: str
    conversation_ids: list[str]
    active: bool | None = None
    status: str | None = None


_signal_decoder = msgspec.json.Decoder(Signal)


async def publish_signal(redis: Redis, signal: Signal) -> None:
    await publish_signals(redis, [signal])


async def publish_signals(redis: Redis, signals: list[Signal]) -> None:
    """Signals in one round trip (a pipeline, not a transaction): a typing notice, or the presence
    announcer's batch. Each is its own entry of the signals stream."""
    if not signals:
        return
    pipe = redis.pipeline(transaction=False)
    for signal in signals:
        pipe.xadd(keys.SIGNALS_STREAM, {"s": msgspec.json.encode(signal)}, maxlen=SIGNALS_MAXLEN, approximate=True)
    await pipe.execute()


class EventFanout:
    """Reads ``parley:events:{shard}`` through group ``node:{node_id}`` (the shared ``StreamConsumer``
    loop) and hands events to the hub. A new group starts at the stream's end: a new node has no sockets,
    so no backlog to serve. Reads are NOACK: routing to local sockets cannot fail, and whatever a node
    had read when it died concerned sockets that died with it (their clients catch up by seq)."""

    def __init__(self, redis: Redis, hub: Hub, *, node_id: str, shard_count: int) -> None:
        self._hub = hub
        self.consumer = StreamConsumer(
            redis,
            group=keys.node_group(node_id),
            consumer=node_id,
            streams=streams.all_streams(shard_count),
            handler=self._handle,
            start="$",
            skip_backlog=True,
            on_groups_lost=self._groups_lost,
            noack=True,  # this node's pending entries would be of no use to anyone once it died
        )

    async def setup(self) -> None:
        await self.consumer.setup()

    async def teardown(self) -> None:
        """On a clean shutdown: remove this node's groups now instead of leaving them to the janitor."""
        await self.consumer.teardown()

    async def run(self, stop: asyncio.Event) -> None:
        """Read and dispatch until ``stop``; ``setup`` must have run (it moves the group to the end)."""
        await self.consumer.run(stop)

    def _groups_lost(self) -> None:
        # Redis lost our groups (restart without persistence, failover): every local client catches up
        # from Postgres, which lost nothing.
        log.warning("resyncing local sockets after the consumer groups were lost")
        self._hub.resync_all()

    async def _handle(self, entries: list[streams.StreamEntry]) -> None:
        """Every entry is handled: routing to local sockets cannot fail, and an undecodable entry
        would fail on every node forever (it is logged and acked)."""
        for entry in entries:
            try:
                event = events.decode(entry.data)
            except msgspec.DecodeError:
                log.error("undecodable entry %s on %s; acking it", entry.entry_id, entry.stream)
                continue
            self._hub.on_event(event)
            _delivered(entry.event_type).inc()
            if isinstance(event, events.MessagePosted):
                metrics.DELIVERY_SECONDS.observe(max(0.0, time.time() - event.message.created_at.timestamp()))
        return None


class SignalFanout:
    """Broadcast read of the signals stream: every node sees every signal (no group)."""

    def __init__(self, redis: Redis, hub: Hub) -> None:
        self._hub = hub
        self._reader = BroadcastReader(redis, keys.SIGNALS_STREAM, b"s", self._route)

    async def run(self, stop: asyncio.Event) -> None:
        await self._reader.run(stop)

    def _route(self, raw: bytes) -> None:
        try:
            signal = _signal_decoder.decode(raw)
        except msgspec.DecodeError:
            return
        user_id = uuid.UUID(signal.user_id)
        conversation_ids = [uuid.UUID(c) for c in signal.conversation_ids]
        if signal.kind == "typing" and conversation_ids:
            data = frames.encode(
                frames.TypingNotice(conversation_id=conversation_ids[0], user_id=user_id, active=bool(signal.active))
            )
            self._hub.to_conversation(conversation_ids[0], data, except_user=user_id)
        elif signal.kind == "presence":
            data = frames.encode(frames.PresenceNotice(user_id=user_id, status=signal.status or "offline"))
            self._hub.to_users_in(conversation_ids, data, except_user=user_id)


def conversation_frame(change: read_models.Change, now: datetime) -> str:
    """The ``conversation`` frame for one user's changed list row."""
    if isinstance(change, read_models.Removed):
        return frames.encode(
            frames.ConversationChanged(
                id=change.conversation_id, title="", last_message=None, unread_count=0, updated_at=now, removed=True
            )
        )
    return frames.encode(
        frames.ConversationChanged(
            id=change.conversation_id,
            title=change.title,
            last_message=views.summary_from_row(msgspec.structs.asdict(change)).last_message,
            unread_count=change.unread_count,
            updated_at=change.updated_at,
        )
    )


class ListChangeFanout:
    """Broadcast read of ``parley:list-changes``: each change becomes a ``conversation`` frame for every
    local socket of its user, whether or not that socket joined the conversation."""

    def __init__(self, redis: Redis, hub: Hub) -> None:
        self._hub = hub
        self._reader = BroadcastReader(redis, keys.LIST_CHANGES_STREAM, b"c", self._route)

    async def run(self, stop: asyncio.Event) -> None:
        await self._reader.run(stop)

    def _route(self, raw: bytes) -> None:
        try:
            changes = list_changes.decode(raw)
        except msgspec.DecodeError:
            return
        now = datetime.now(UTC)
        for change in changes:
            if self._hub.sockets_of(change.user_id):
                self._hub.to_user(change.user_id, conversation_frame(change, now))
