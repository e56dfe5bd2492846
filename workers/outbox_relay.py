"""Flow 2, the outbox relay (`parley relay`): committed outbox rows -> Redis Streams, then deleted.

Each batch is one transaction: take the shards' advisory locks (transaction-scoped, so at most one
relay publishes a shard at any moment and per-conversation order holds), delete the oldest rows of the
shards we locked (``FOR UPDATE SKIP LOCKED``) returning them, XADD them in one pipeline, commit. A crash
between XADD and commit leaves the rows for the next batch: they are published again, and consumers
absorb the duplicates by seq. Any number of relays may run; extra ones are hot standbys that take
shards whenever the active one does not hold them.

Wake-ups come from ``LISTEN parley_outbox`` (every committing post NOTIFYs), with a slow poll as a
safety net for lost notifications and for rows left by a crashed relay.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import asyncpg
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from infrastructure.bootstrap import Services, asyncpg_dsn, bootstrap
from infrastructure.db.unit_of_work import OUTBOX_CHANNEL
from infrastructure.metrics import sample_pipeline, track_pools, untrack_pools
from infrastructure.metrics_server import start_metrics_server
from infrastructure.redis import streams
from infrastructure.settings import Settings

log = logging.getLogger("parley.relay")

#: Advisory-lock namespace (first key of the two-int form); the second key is the shard number.
LOCK_NAMESPACE = 0x5041524C  # "PARL"
#: Rows per batch: large enough to amortise the round trips, small enough to keep transactions short.
BATCH_SIZE = 500
#: Safety-net poll when no NOTIFY arrives (lost notification, rows left by a crashed relay).
POLL_SECONDS = 1.0

PUBLISHED = Counter("parley_relay_published_total", "Outbox events published to Redis Streams")
BATCH_SECONDS = Histogram("parley_relay_batch_seconds", "Claim+publish+delete time of one relay batch")
BACKLOG = Gauge("parley_outbox_backlog", "Outbox rows not yet published (sampled by the relay)")

# One statement: lock the shards no other relay holds (transaction-scoped, released at commit), take
# the oldest rows of those shards out of the outbox, and let this transaction commit asynchronously.
# The rows come back if the transaction does not commit (Redis refused the XADD, the relay died).
# An asynchronous commit is enough: if a crash loses it, the rows are published again and consumers
# absorb the duplicates; it saves a WAL flush per batch. MATERIALIZED keeps the lock calls out of the
# outer plan, and RETURNING has no order, so the caller sorts by id.
_CLAIM = """
    WITH async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),
    mine AS MATERIALIZED (
        SELECT s FROM generate_series(0, $1::int - 1) AS s
        WHERE pg_try_advisory_xact_lock($2::int, s)
    ),
    claimed AS (
        DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox
            WHERE shard IN (SELECT s FROM mine)
            ORDER BY id
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, shard, event_type, payload
    )
    SELECT claimed.* FROM claimed, async_commit
"""


class OutboxRelay:
    def __init__(self, services: Services, *, batch_size: int = BATCH_SIZE, poll_seconds: float = POLL_SECONDS):
        self._services = services
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many events it published."""
        settings = self._services.settings
        started = time.perf_counter()
        async with self._services.pg.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, settings.redis.shard_count, LOCK_NAMESPACE, self._batch_size)
            if not rows:
                return 0
            batch = sorted(
                (streams.OutboxEntry(r["id"], r["shard"], r["event_type"], r["payload"]) for r in rows),
                key=lambda e: e.id,
            )
            await streams.publish(self._services.redis, batch, maxlen=settings.redis.stream_maxlen)
        PUBLISHED.inc(len(batch))
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return len(batch)

    async def drain(self) -> int:
        total = 0
        while not self._stopping.is_set():
            published = await self.relay_once()
            total += published
            if published < self._batch_size:
                return total
        return total

    async def run(self) -> None:
        """Until ``stop``: drain on every NOTIFY or poll tick; back off while Postgres or Redis are down."""
        await streams.ensure_epoch(self._services.redis)
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                # LISTEN holds session state: a connection of its own, never the pool's.
                listener = await asyncpg.connect(asyncpg_dsn(self._services.settings))
                try:
                    await listener.add_listener(OUTBOX_CHANNEL, self._on_notify)
                    log.info("relay listening on %s", OUTBOX_CHANNEL)
                    while not self._stopping.is_set():
                        await self.drain()
                        backoff = 0.1
                        await self._sleep()
                        if listener.is_closed():
                            raise ConnectionError("LISTEN connection closed")
                finally:
                    await listener.close(timeout=5)
            except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
                log.warning("relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _sleep(self) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
        except TimeoutError:
            await self._sample_backlog()

    async def _sample_backlog(self) -> None:
        BACKLOG.set(await self._services.pg.fetchval("SELECT count(*) FROM outbox"))

    def _on_notify(self, *_: object) -> None:
        self._wake.set()


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    metrics = start_metrics_server(settings, "relay")
    services = await bootstrap(settings)
    track_pools(services)
    relay = OutboxRelay(services)
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_pipeline(services, stop_sampling))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay.stop)
    try:
        await relay.run()
    finally:
        stop_sampling.set()
        await sampler
        untrack_pools(services)
        await services.close()
        if metrics:
            metrics.close()
        log.info("relay stopped")


if __name__ == "__main__":
    from infrastructure import logs
    from infrastructure.settings import LogSettings

    log_settings = LogSettings.from_env()
    logs.configure(log_settings.level, log_settings.format)
    asyncio.run(main())
