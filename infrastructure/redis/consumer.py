"""The one stream-consumer loop of Parley: WS nodes (flow 3), projectors (flow 4) and the worker (flow 5)
all read the shard streams through it.

API::

    consumer = StreamConsumer(
        redis,
        group="projector",            # consumer group, created on every stream in ``streams``
        consumer="host-1234",         # this process's name inside the group
        streams=all_streams(16),
        handler=handle,               # async (list[StreamEntry]) -> Collection[StreamEntry] | None
        start="0",                    # where a new group starts ("$": only new entries)
        skip_backlog=False,           # True: after claiming own pending, move the group to the end
        claim_idle_ms=30_000,         # shared groups: take entries other consumers left pending this long
        max_deliveries=5,             # ... and after this many deliveries, dead-letter them instead
        on_groups_lost=callback,      # groups vanished (Redis restarted empty): they were recreated
        noack=False,                  # True: read with NOACK (nothing pending, nothing to ack; see below)
    )
    await consumer.setup()            # create groups, hand own pending entries to the handler
    await consumer.run(stop_event)    # read, handle, ack until ``stop_event`` is set
    await consumer.teardown()         # remove the groups (per-node groups on clean shutdown)

``noack`` is for a group whose consumer's pending entries would be worthless after it died: a WS
node's (its sockets die with it, and their clients catch up from PostgreSQL on the node they reconnect
to). Its reads skip the pending list, which saves Redis the bookkeeping and the node an XACK round
trip per batch; the handler's answer is then ignored.

The handler gets a batch and returns the entries it handled (``None``: all of them); only those are
XACKed. (Entries, not ids: an id is unique within one stream only, and a batch spans every shard.)
An entry it leaves out stays pending and is retried once idle for ``claim_idle_ms`` (by whichever
consumer of the group claims it first); once delivered ``max_deliveries`` times it is
copied to the dead-letter stream ``parley:dead-letter`` with its origin, acked, counted and logged, so
one poison event never blocks its shard. A handler that *raises* signals a transient failure (database
down): nothing of the batch is acked, the loop backs off, and no claiming happens until a batch
succeeds again, so an outage does not push healthy entries towards the dead-letter stream.

Redis errors back off exponentially (0.1 s to 5 s). ``NOGROUP`` (and Redis 7's ``UNBLOCKED`` when a
stream is deleted under a blocked read) mean Redis lost the groups: they are recreated at ``start``
and ``on_groups_lost`` runs, since entries were lost too and the caller must recover from PostgreSQL.
Entries trimmed away while pending come back empty and are acked silently (``gone``): consumers
detect the hole by seq and recover from PostgreSQL, the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from infrastructure.redis import keys, streams
from infrastructure.redis.streams import StreamEntry

log = logging.getLogger("parley.redis.consumer")

Handler = Callable[[list[StreamEntry]], Awaitable[Collection[StreamEntry] | None]]

#: Entries per read; a batch is acked with one XACK per stream.
READ_COUNT = 500
#: How long a read blocks; also bounds how quickly a stop request is noticed.
BLOCK_MS = 1000
#: Dead letters kept (approximately); they are for inspection, not a queue.
DEAD_LETTER_MAXLEN = 10_000

ENTRIES = Counter(
    "parley_stream_entries_total",
    "Stream entries consumed, by group kind and outcome (acked, retried, dead_letter, gone)",
    ["group", "outcome"],
)
DEAD_LETTERS = Counter("parley_stream_dead_letters_total", "Entries moved to the dead-letter stream", ["group"])


def group_kind(group: str) -> str:
    """Metric label: ``node:abc`` -> ``node`` (one series per role, not per node)."""
    return group.split(":", 1)[0]


class StreamConsumer:
    def __init__(
        self,
        redis: Redis,
        *,
        group: str,
        consumer: str,
        streams: Sequence[str],
        handler: Handler,
        start: str = "$",
        skip_backlog: bool = False,
        count: int = READ_COUNT,
        block_ms: int = BLOCK_MS,
        claim_idle_ms: int | None = None,
        max_deliveries: int | None = None,
        on_groups_lost: Callable[[], Awaitable[None] | None] | None = None,
        noack: bool = False,
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.streams = list(streams)
        self._handler = handler
        self._start = start
        self._skip_backlog = skip_backlog
        self._count = count
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._max_deliveries = max_deliveries
        self._on_groups_lost = on_groups_lost
        self._noack = noack
        self._kind = group_kind(group)
        # Counted every batch: the labelled series are looked up once.
        self._acked, self._retried, self._gone = (ENTRIES.labels(self._kind, o) for o in ("acked", "retried", "gone"))
        self._healthy = True
        self._next_claim = 0.0

    # -- life cycle ------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the groups, then hand this consumer's own pending entries (a previous run of it died
        before acking them) to the handler. With ``skip_backlog`` the group then moves to the stream's
        end: only at start and after Redis lost the groups, since moving it skips entries."""
        for stream in self.streams:
            await streams.ensure_group(self.redis, stream, self.group, start=self._start)
        for stream in self.streams:
            await self._drain_own_pending(stream)
        if self._skip_backlog:
            for stream in self.streams:
                await self.redis.xgroup_setid(stream, self.group, id="$")

    async def teardown(self) -> None:
        for stream in self.streams:
            await self.redis.xgroup_destroy(stream, self.group)

    async def run(self, stop: asyncio.Event) -> None:
        """Read, handle and ack until ``stop``; ``setup`` must have run."""
        backoff = 0.1
        while not stop.is_set():
            try:
                if self._claim_idle_ms is not None and self._healthy and time.monotonic() >= self._next_claim:
                    self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
                    await self.claim_stale()
                await self.read_once()
                backoff = 0.1
            except ResponseError as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                log.warning("%s: consumer groups are gone; recreating them", self.group)
                await self.setup()
                if self._on_groups_lost is not None:
                    result = self._on_groups_lost()
                    if result is not None:
                        await result
            except (RedisError, OSError) as exc:
                log.warning("%s: %s; retrying in %.1fs", self.group, exc, backoff)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 5.0)
            except HandlerFailed:
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    # -- one step each ---------------------------------------------------------------------------

    async def read_once(self, *, block: int | None = -1) -> int:
        """One XREADGROUP of new entries over every stream; returns how many were read."""
        ids: Any = {s: ">" for s in self.streams}
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            ids,
            count=self._count,
            block=self._block_ms if block == -1 else block,
            noack=self._noack,
        )
        entries, gone = parse(reply)
        await self._handle(entries, gone)
        return len(entries)

    async def claim_stale(self) -> int:
        """Take over entries pending longer than ``claim_idle_ms`` in this group (a dead consumer's, or
        ones the handler refused), dead-lettering those delivered ``max_deliveries`` times already."""
        assert self._claim_idle_ms is not None
        claimed = 0
        for stream in self.streams:
            pending = await self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=self._count, idle=self._claim_idle_ms
            )
            if not pending:
                continue
            limit = self._max_deliveries
            dead = [p for p in pending if limit is not None and int(p["times_delivered"]) >= limit]
            retry = [p["message_id"] for p in pending if p not in dead]
            for item in dead:
                await self._dead_letter(stream, item["message_id"], int(item["times_delivered"]))
            if retry:
                reply = await self.redis.xclaim(
                    stream, self.group, self.consumer, min_idle_time=self._claim_idle_ms, message_ids=retry
                )
                entries, gone = parse([(stream, reply)])
                await self._handle(entries, gone, from_pending=True)
                claimed += len(entries)
        return claimed

    async def forget_idle_consumers(self, idle_ms: int) -> list[str]:
        """Remove other consumers of the group that hold nothing and were idle ``idle_ms`` (processes that
        stopped or died and whose entries were claimed), so the operators' report lists live ones only."""
        removed = []
        for stream in self.streams:
            try:
                consumers = await self.redis.xinfo_consumers(stream, self.group)
            except ResponseError:  # no stream or no group yet: nobody to forget
                continue
            for info in consumers:
                name = info["name"].decode() if isinstance(info["name"], bytes) else str(info["name"])
                if name != self.consumer and not int(info["pending"]) and int(info["idle"]) >= idle_ms:
                    await self.redis.xgroup_delconsumer(stream, self.group, name)
                    removed.append(name)
        return sorted(set(removed))

    async def _drain_own_pending(self, stream: str) -> None:
        after: str | bytes = "0"
        while True:
            reply = await self.redis.xreadgroup(self.group, self.consumer, {stream: after}, count=self._count)
            entries, gone = parse(reply)
            if not entries and not gone:
                return
            await self._handle(entries, gone, from_pending=True)  # (with noack: left by an acking version)
            after = max([e.entry_id for e in entries] + [g for _s, g in gone], key=_id_key)

    async def _handle(
        self, entries: list[StreamEntry], gone: list[tuple[str, bytes]], *, from_pending: bool = False
    ) -> None:
        handled: Collection[StreamEntry] | None = ()
        if entries:
            try:
                handled = await self._handler(entries)
            except Exception as exc:
                self._healthy = False
                self._retried.inc(len(entries))
                log.warning("%s: handler failed on a batch of %d (%s); it stays pending", self.group, len(entries), exc)
                raise HandlerFailed from exc
            self._healthy = True
        if self._noack and not from_pending:
            self._acked.inc(len(entries))  # read without a pending entry: done
            return
        if handled is None:
            acked = entries
        else:
            done = set(handled)
            acked = [e for e in entries if e in done]
        by_stream: dict[str, list[bytes]] = {}
        for entry in acked:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        for stream, entry_id in gone:
            by_stream.setdefault(stream, []).append(entry_id)
        if by_stream:
            pipe = self.redis.pipeline(transaction=False)
            for stream, entry_ids in by_stream.items():
                pipe.xack(stream, self.group, *entry_ids)
            await pipe.execute()
        self._acked.inc(len(acked))
        self._retried.inc(len(entries) - len(acked))
        self._gone.inc(len(gone))

    async def _dead_letter(self, stream: str, entry_id: bytes, deliveries: int) -> None:
        found = await self.redis.xrange(stream, min=entry_id, max=entry_id)
        fields: dict[bytes, bytes] = found[0][1] if found else {}
        record: Any = {
            "stream": stream,
            "group": self.group,
            "id": entry_id,
            "deliveries": deliveries,
            "type": fields.get(b"type", b""),
            "data": fields.get(b"data", b""),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(keys.DEAD_LETTER_STREAM, record, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        pipe.xack(stream, self.group, entry_id)
        await pipe.execute()
        DEAD_LETTERS.labels(self._kind).inc()
        ENTRIES.labels(self._kind, "dead_letter").inc()
        log.error(
            "%s: entry %s on %s (%s) failed %d deliveries; moved to %s",
            self.group,
            entry_id.decode(),
            stream,
            fields.get(b"type", b"?").decode(errors="replace"),
            deliveries,
            keys.DEAD_LETTER_STREAM,
        )


class HandlerFailed(Exception):
    """The handler raised: a transient failure; the batch stays pending."""


def parse(reply: Any) -> tuple[list[StreamEntry], list[tuple[str, bytes]]]:
    """Split an XREADGROUP/XCLAIM reply into readable entries and ids whose entry was trimmed away."""
    entries: list[StreamEntry] = []
    gone: list[tuple[str, bytes]] = []
    for stream, items in reply or []:
        name = stream.decode() if isinstance(stream, bytes) else stream
        for entry_id, fields in items or []:
            if not fields or b"data" not in fields:
                gone.append((name, entry_id))
                continue
            entries.append(StreamEntry(name, entry_id, fields.get(b"type", b"").decode(), fields[b"data"]))
    return entries, gone


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
