"""The node's consumers: durable events through the node's own consumer group on every shard stream,
and ephemeral signals (typing, presence) from the small capped signals stream."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import msgspec
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from app.metrics import DELIVERY_SECONDS
from app.ws import frames
from app.ws.hub import Hub
from domain import events
from infrastructure.redis import keys, streams

log = logging.getLogger("parley.ws.fanout")

#: Entries per XREADGROUP call; a batch is acked with one XACK per stream.
READ_COUNT = 500
#: How long a read blocks; also bounds how quickly a stop request is noticed.
BLOCK_MS = 1000
#: The signals stream is for live presence/typing only; a short cap is enough.
SIGNALS_MAXLEN = 10_000

EVENTS_DELIVERED = Counter("parley_ws_events_total", "Durable events consumed by this WS node", ["type"])


class Signal(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    kind: str  # "typing" | "presence"
    user_id: str
    conversation_ids: list[str]
    active: bool | None = None
    status: str | None = None


_signal_decoder = msgspec.json.Decoder(Signal)


async def publish_signal(redis: Redis, signal: Signal) -> None:
    await redis.xadd(keys.SIGNALS_STREAM, {"s": msgspec.json.encode(signal)}, maxlen=SIGNALS_MAXLEN, approximate=True)


class EventFanout:
    """Reads ``parley:events:{shard}`` through group ``node:{node_id}`` and hands events to the hub."""

    def __init__(self, redis: Redis, hub: Hub, *, node_id: str, shard_count: int) -> None:
        self._redis = redis
        self._hub = hub
        self._group = keys.node_group(node_id)
        self._consumer = node_id
        self._streams = streams.all_streams(shard_count)

    async def setup(self) -> None:
        """Create the groups at the stream's end (a new node has no sockets, so no backlog to serve),
        then claim and ack this node's own pending entries left by a previous run of it. Only at start
        and after Redis lost the groups: moving the group to the end skips entries."""
        for stream in self._streams:
            await streams.ensure_group(self._redis, stream, self._group, start="$")
        await self._consume({s: "0" for s in self._streams}, block=None)
        for stream in self._streams:
            await self._redis.xgroup_setid(stream, self._group, id="$")

    async def teardown(self) -> None:
        """On a clean shutdown: remove this node's groups now instead of leaving them to the janitor."""
        for stream in self._streams:
            await self._redis.xgroup_destroy(stream, self._group)

    async def run(self, stop: asyncio.Event) -> None:
        """Read and dispatch until ``stop``; ``setup`` must have run (it moves the group to the end)."""
        while not stop.is_set():
            try:
                await self._consume({s: ">" for s in self._streams}, block=BLOCK_MS)
            except ResponseError as exc:
                # NOGROUP: the group is gone. UNBLOCKED: the stream was deleted under a blocked read.
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                # Redis lost our groups (restart without persistence, failover): recreate them and let
                # every local client catch up from Postgres, which lost nothing.
                log.warning("consumer groups are gone; recreating them and resyncing local sockets")
                await self.setup()
                self._hub.resync_all()
            except (RedisError, OSError) as exc:
                log.warning("event fan-out: %s; retrying", exc)
                await asyncio.sleep(1)

    async def _consume(self, ids: dict[str, str], *, block: int | None) -> int:
        stream_ids: Any = ids  # redis-py's annotation wants an invariant dict of unions
        reply = await self._redis.xreadgroup(self._group, self._consumer, stream_ids, count=READ_COUNT, block=block)
        entries = streams.parse_entries(reply)
        by_stream: dict[str, list[bytes]] = {}
        for entry in entries:
            try:
                event = events.decode(entry.data)
            except msgspec.DecodeError:
                log.error("undecodable entry %s on %s; acking it", entry.entry_id, entry.stream)
            else:
                self._hub.on_event(event)
                EVENTS_DELIVERED.labels(entry.event_type).inc()
                if isinstance(event, events.MessagePosted):
                    DELIVERY_SECONDS.observe(max(0.0, time.time() - event.message.created_at.timestamp()))
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        if by_stream:
            pipe = self._redis.pipeline(transaction=False)
            for stream, entry_ids in by_stream.items():
                pipe.xack(stream, self._group, *entry_ids)
            await pipe.execute()
        # A reply to "0" lists pending entries; loop until this node has none left.
        if block is None and entries:
            return len(entries) + await self._consume(ids, block=None)
        return len(entries)


class SignalFanout:
    """Broadcast read of the signals stream: every node sees every signal (no group)."""

    def __init__(self, redis: Redis, hub: Hub) -> None:
        self._redis = redis
        self._hub = hub

    async def run(self, stop: asyncio.Event) -> None:
        last_id: str | bytes = "$"
        while not stop.is_set():
            try:
                reply: Any = await self._redis.xread({keys.SIGNALS_STREAM: last_id}, count=READ_COUNT, block=BLOCK_MS)
            except (RedisError, OSError) as exc:
                log.warning("signal fan-out: %s; retrying", exc)
                await asyncio.sleep(1)
                continue
            for _stream, items in reply or []:
                for entry_id, fields in items:
                    last_id = entry_id
                    self._route(fields.get(b"s", b""))

    def _route(self, raw: bytes) -> None:
        try:
            signal = _signal_decoder.decode(raw)
        except msgspec.DecodeError:
            return
        user_id = uuid.UUID(signal.user_id)
        conversation_ids = [uuid.UUID(c) for c in signal.conversation_ids]
        if signal.kind == "typing" and conversation_ids:
            data = frames.frame(
                "typing", conversation_id=signal.conversation_ids[0], user_id=signal.user_id, active=bool(signal.active)
            )
            self._hub.to_conversation(conversation_ids[0], data, except_user=user_id)
        elif signal.kind == "presence":
            data = frames.frame("presence", user_id=signal.user_id, status=signal.status)
            self._hub.to_users_in(conversation_ids, data, except_user=user_id)
