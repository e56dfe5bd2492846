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
from prometheus_client import Counter, Histogram, start_http_server
from redis.exceptions import RedisError

from infrastructure.bootstrap import Services, asyncpg_dsn, bootstrap
from infrastructure.db import outbox
from infrastructure.redis import streams
from infrastructure.settings import Settings
from infrastructure.stream_metrics import BACKLOG

log = logging.getLogger("parley.relay")

#: Rows per batch: large enough to amortise the round trips, small enough to keep transactions short.
BATCH_SIZE = 500
#: Safety-net poll when no NOTIFY arrives (lost notification, rows left by a crashed relay).
POLL_SECONDS = 1.0

PUBLISHED = Counter("parley_relay_published_total", "Outbox events published to Redis Streams")
BATCH_SECONDS = Histogram("parley_relay_batch_seconds", "Claim+publish+delete time of one relay batch")


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
            batch = await outbox.claim(conn, shard_count=settings.redis.shard_count, limit=self._batch_size)
            if not batch:
                return 0
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
                    await listener.add_listener(outbox.CHANNEL, self._on_notify)
                    log.info("relay listening on %s", outbox.CHANNEL)
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
        BACKLOG.set((await outbox.backlog(self._services.pg)).rows)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    if settings.server.metrics_port:
        start_http_server(settings.server.metrics_port)
    services = await bootstrap(settings)
    relay = OutboxRelay(services)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay.stop)
    try:
        await relay.run()
    finally:
        await services.close()
        log.info("relay stopped")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main())
