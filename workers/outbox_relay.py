"""Flow 2, the outbox relay (`parley relay`): committed outbox rows -> Redis Streams, then deleted.

API nodes publish what they commit themselves (``infrastructure/outbox_publisher.py``); the relay is
the safety net for rows nobody published: those of a node that died between commit and publish, of a
publish that failed, and of processes that run no publisher (the worker's answers, the CLI), which
NOTIFY it. Each batch is ``publish_once`` over every shard: shard advisory locks (at most one relay
per shard at any moment), the oldest rows of the locked shards whose publish keys it could take (a
node holds the keys of what it is publishing: those rows are its, and a conversation's rows are
never taken out of order), XADD, commit. A crash between XADD and commit leaves the rows for
the next batch: they are published again, and consumers absorb the duplicates by seq. Any number of
relays may run; extra ones are hot standbys that take shards whenever the active one does not hold them.

A relay that stops mid-batch (SIGSTOP, a hung process) loses its shards after ``outbox.LEASE_MS``:
PostgreSQL ends its idle-in-transaction session, the claim rolls back and a standby republishes those
rows. If the stopped relay wakes later it may still XADD the batch it held: those entries repeat seqs
a standby already published, and every consumer drops a seq at or below what it has delivered (the
WS delivery rule, the projector's last-applied seq), so a zombie cannot reorder what clients see; its
commit then fails on the dead session and it starts over. ``tests/e2e/test_relay_lease.py`` shows it.

Wake-ups come from ``LISTEN parley_outbox`` (commits of processes without a publisher NOTIFY), and a
poll every ``POLL_SECONDS`` finds rows left by crashed nodes, failed publishes and lost notifications.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
from redis.exceptions import RedisError

from infrastructure.bootstrap import Services, asyncpg_dsn, bootstrap
from infrastructure.db import outbox
from infrastructure.metrics import track_pools, untrack_pools
from infrastructure.metrics_server import start_metrics_server
from infrastructure.outbox_publisher import BATCH_SIZE, publish_once
from infrastructure.redis import streams
from infrastructure.settings import Settings
from infrastructure.stream_metrics import BACKLOG

log = logging.getLogger("parley.relay")

#: Safety-net poll: how long rows a node committed but did not publish (it died) wait at most.
POLL_SECONDS = 1.0


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
        return await publish_once(
            self._services.pg,
            self._services.redis,
            shards=range(settings.redis.shard_count),
            maxlen=settings.redis.stream_maxlen,
            limit=self._batch_size,
        )

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
            except (
                OSError,
                RedisError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                ConnectionError,
                TimeoutError,
            ) as exc:
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
    metrics = start_metrics_server(settings, "relay")
    services = await bootstrap(settings)
    track_pools(services)
    relay = OutboxRelay(services)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, relay.stop)
    try:
        await relay.run()
    finally:
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
