"""Flow 4, the read-model projector (`parley projector`).

Any number of projector processes share the consumer group ``projector`` on every shard stream (the
shared ``StreamConsumer`` loop): each batch is projected in one transaction (``project``), then its
list changes go to the WS nodes (``infrastructure/redis/list_changes.py``), then the entries are acked.
A consumer that dies leaves its entries pending; another claims them after ``PARLEY_CLAIM_IDLE_MS``.
Redelivered, reordered and trimmed entries are absorbed by the per-conversation applied seq
(``infrastructure/db/read_models.py``). An entry that cannot be projected (undecodable, or failing on
its own) stays pending and after ``PARLEY_MAX_DELIVERIES`` deliveries moves to the dead-letter stream.
A sweep every ``SWEEP_SECONDS`` recomputes conversations whose events were lost entirely (a trimmed
tail, a Redis that lost data), comparing the write tables with the projection state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import msgspec
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from redis.exceptions import RedisError

from domain import events
from infrastructure.bootstrap import Services, bootstrap
from infrastructure.db import read_model_upkeep, read_models
from infrastructure.db.read_models import Change
from infrastructure.redis import keys, list_changes, streams
from infrastructure.redis.consumer import StreamConsumer
from infrastructure.redis.streams import StreamEntry
from infrastructure.settings import Settings

log = logging.getLogger("parley.projector")

#: How often the lost-event sweep runs, and how old a write must be before a missing projection of it
#: counts as lost rather than in flight.
SWEEP_SECONDS = 10.0
SWEEP_MIN_AGE_SECONDS = 30.0
#: A consumer of the group idle this many claim periods with nothing pending is a process that is gone.
FORGET_AFTER_CLAIM_PERIODS = 20
#: A deadlock between two projectors (they share users across conversations) is retried at once.
DEADLOCK_RETRIES = 5

PROJECTED = Counter("parley_projector_events_total", "Events projected, by type and outcome", ["type", "outcome"])
RESYNCS = Counter("parley_projector_resyncs_total", "Conversations recomputed from PostgreSQL, by reason", ["reason"])
BATCH_SECONDS = Histogram("parley_projector_batch_seconds", "Time to project and commit one batch")
LAG_SECONDS = Gauge("parley_projector_lag_seconds", "Age of the oldest event in the last batch projected")

#: Errors that say "PostgreSQL or Redis is unavailable": the batch stays pending and is retried.
TRANSIENT = (OSError, ConnectionError, RedisError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


def default_consumer_name() -> str:
    return os.environ.get("PARLEY_NODE_ID") or f"{socket.gethostname()}-{os.getpid()}"


class _Plan:
    """What one batch does, decided from the locked applied seqs before anything is written."""

    def __init__(self) -> None:
        self.incremental: list[events.MessagePosted] = []
        self.full: dict[UUID, str] = {}  # conversation -> reason
        self.refresh: set[UUID] = set()
        self.readers: set[tuple[UUID, UUID]] = set()
        self.usage: list[events.AssistantUsageRecorded] = []

    def add(self, event: events.Event, applied: dict[UUID, int]) -> None:
        cid = event.conversation_id
        match event:
            case events.MessagePosted(message=message):
                done = applied.get(cid)
                if cid in self.full:
                    return
                if done is None:
                    self.full[cid] = "new"
                elif message.seq <= done:
                    PROJECTED.labels("message_posted", "duplicate").inc()
                elif message.seq == done + 1:
                    self.incremental.append(event)
                    applied[cid] = message.seq
                else:
                    self.full[cid] = "gap"
            case events.ReadCursorMoved(user_id=uid):
                self.readers.add((cid, uid))
            case events.AssistantUsageRecorded():
                self.usage.append(event)
            case _:
                self.refresh.add(cid)


async def project(conn: asyncpg.Connection, batch: Sequence[events.Event]) -> list[Change]:
    """Apply a batch of events to the read models inside the caller's transaction."""
    applied = await read_models.lock_states(conn, [e.conversation_id for e in batch])
    plan = _Plan()
    for event in batch:
        plan.add(event, applied)
    messages = [e.message for e in plan.incremental if e.conversation_id not in plan.full]
    changes = await read_models.apply_messages(conn, messages)
    for cid, reason in sorted(plan.full.items()):
        RESYNCS.labels(reason).inc()
        changes += await read_models.recompute(conn, cid, full=True)
    for cid in sorted(plan.refresh - set(plan.full)):
        changes += await read_models.recompute(conn, cid, full=False)
    for cid, uid in sorted(plan.readers):
        changes += await read_models.refresh_reader(conn, cid, uid)
    for usage in plan.usage:
        await read_model_upkeep.add_usage(conn, usage)
    return changes


class Projector:
    def __init__(self, services: Services, *, consumer_name: str | None = None) -> None:
        self._services = services
        settings = services.settings.redis
        self._stop = asyncio.Event()
        self.consumer = StreamConsumer(
            services.redis,
            group=keys.PROJECTOR_GROUP,
            consumer=consumer_name or default_consumer_name(),
            streams=streams.all_streams(settings.shard_count),
            handler=self.handle,
            start="0",
            claim_idle_ms=settings.claim_idle_ms,
            max_deliveries=settings.max_deliveries,
            on_groups_lost=self._groups_lost,
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Until ``stop``: set up (claims own pending entries), consume, sweep; back off on outages."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                await self.consumer.setup()
                break
            except TRANSIENT as exc:
                log.warning("projector start-up: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        log.info("projector %s consuming %d streams", self.consumer.consumer, len(self.consumer.streams))
        sweeper = asyncio.create_task(self._sweep_loop())
        try:
            await self.consumer.run(self._stop)
        finally:
            sweeper.cancel()

    async def handle(self, entries: list[StreamEntry]) -> list[StreamEntry]:
        """Project a batch; returns the entries projected (a poison entry is left out, so it is retried and
        eventually dead-lettered). Raises on a transient failure: nothing is acked."""
        decoded: list[tuple[StreamEntry, events.Event]] = []
        for entry in entries:
            try:
                decoded.append((entry, events.decode(entry.data)))
            except msgspec.DecodeError:
                PROJECTED.labels(entry.event_type or "?", "undecodable").inc()
                log.error("undecodable entry %s on %s; leaving it pending", entry.entry_id.decode(), entry.stream)
        if not decoded:
            return []
        started = time.perf_counter()
        try:
            changes = await self._project([e for _, e in decoded])
            handled = [entry for entry, _ in decoded]
        except TRANSIENT:
            raise
        except Exception:
            log.exception("a batch of %d failed; projecting its entries one by one", len(decoded))
            changes, handled = await self._one_by_one(decoded)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        now = datetime.now(UTC)
        LAG_SECONDS.set(max((now - e.occurred_at).total_seconds() for _, e in decoded))
        for _, event in decoded:
            PROJECTED.labels(events.type_name(event), "applied").inc()
        await list_changes.publish(self._services.redis, changes)
        return handled

    async def _project(self, batch: list[events.Event]) -> list[Change]:
        for attempt in range(DEADLOCK_RETRIES):
            try:
                async with self._services.pg.acquire() as conn, conn.transaction():
                    return await project(conn, batch)
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _one_by_one(
        self, decoded: list[tuple[StreamEntry, events.Event]]
    ) -> tuple[list[Change], list[StreamEntry]]:
        changes: list[Change] = []
        handled: list[StreamEntry] = []
        for entry, event in decoded:
            try:
                changes += await self._project([event])
            except TRANSIENT:
                raise
            except Exception:
                PROJECTED.labels(events.type_name(event), "failed").inc()
                log.exception("entry %s on %s cannot be projected; leaving it pending", entry.entry_id, entry.stream)
                continue
            handled.append(entry)
        return changes, handled

    async def sweep(self) -> int:
        """Recompute conversations whose events never arrived; returns how many."""
        async with self._services.pg.acquire() as conn:
            stale = await read_model_upkeep.stale_conversations(
                conn, older_than_seconds=SWEEP_MIN_AGE_SECONDS, limit=500
            )
        changes: list[Change] = []
        for cid in stale:
            RESYNCS.labels("lost").inc()
            async with self._services.pg.acquire() as conn, conn.transaction():
                changes += await read_models.recompute(conn, cid, full=True)
        await list_changes.publish(self._services.redis, changes)
        if stale:
            log.info("sweep recomputed %d conversations whose events were lost", len(stale))
        idle_ms = max(self._services.settings.redis.claim_idle_ms * FORGET_AFTER_CLAIM_PERIODS, 60_000)
        if gone := await self.consumer.forget_idle_consumers(idle_ms):
            log.info("removed idle projector consumers with nothing pending: %s", ", ".join(gone))
        return len(stale)

    async def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception as exc:  # the next sweep tries again
                log.warning("sweep failed: %s", exc)

    async def _groups_lost(self) -> None:
        """Redis lost the streams: recover what it lost from PostgreSQL now rather than at the next sweep."""
        log.warning("projector groups were lost with their entries; sweeping")
        await self.sweep()


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    if settings.server.metrics_port:
        start_http_server(settings.server.metrics_port)
    services = await bootstrap(settings)
    projector = Projector(services)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, projector.stop)
    try:
        await projector.run()
    finally:
        await services.close()
        log.info("projector stopped")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
