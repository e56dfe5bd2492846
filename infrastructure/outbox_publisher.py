"""Flow 2, outbox -> Redis Streams: one publish step, and the API node's own publisher.

``publish_once`` is the step every publisher takes, in one transaction: lock the shards it can
(transaction-scoped advisory locks, so at most one process publishes a shard at any moment), take the
oldest committed rows of those shards out of the outbox, XADD them in one pipeline, commit. Within a
conversation outbox ids follow commit order (rows are inserted under the conversation's row lock), so
taking the oldest rows first keeps every conversation's events in order in its stream, whichever
process publishes them; a crash between XADD and commit publishes the rows again, and consumers
absorb the duplicates by seq.

``OutboxPublisher`` runs in each API node (flow 1 -> 2 without a process hop): the unit of work wakes
it after every commit with the shards it wrote to, and it publishes at once, coalescing whatever
commits arrive while a publish is in flight. It waits for shards another publisher holds (that one
may have claimed before our commit was visible, so skipping would strand our rows until the relay's
next poll), at most ``WAIT_SECONDS``, then leaves the rows to the relay. The relay
(``workers/outbox_relay.py``) is the safety net: it publishes rows of a node that died between commit
and publish, and everything written by processes that run no publisher (workers, the CLI); it never
waits for a shard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infrastructure.db import outbox
from infrastructure.redis import streams

log = logging.getLogger("parley.publisher")

#: Rows per publish step: large enough to amortise the round trips, small enough to keep transactions short.
BATCH_SIZE = 500
#: Bound on one step's XADD pipeline, well inside the shard lease (``outbox.LEASE_MS``).
REDIS_PUBLISH_TIMEOUT = 2.0
#: A node waits this long at most for shards other publishers hold; then its rows are the relay's.
#: Above the shard lease (``outbox.LEASE_MS``), after which a stuck holder's session is ended.
WAIT_SECONDS = 5.0

PUBLISHED = Counter("parley_outbox_published_total", "Outbox events published to Redis Streams", ["publisher"])
STEP_SECONDS = Histogram(
    "parley_outbox_publish_seconds",
    "Claim + XADD + commit time of one publish step",
    ["publisher"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
LEFT_TO_RELAY = Counter(
    "parley_outbox_left_to_relay_total", "Publishes an API node gave up (the relay publishes the rows)"
)

#: What makes one publish step fail for now (the rows stay in the outbox).
TRANSIENT = (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class Published:
    count: int
    #: The shards this step held: their rows committed before it started are all published.
    locked: frozenset[int]


async def publish_once(
    pool: asyncpg.Pool,
    redis: Redis,
    *,
    shards: Sequence[int],
    maxlen: int,
    limit: int = BATCH_SIZE,
    publisher: str,
    wait: bool = False,
) -> Published:
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        claim = await outbox.claim(conn, shards=shards, limit=limit, wait=wait)
        if claim.rows:
            # Bounded: a paused Redis must not keep the shards until the lease runs out. asyncio.timeout,
            # not wait_for, which on Python 3.11 runs the call in a task of its own (a turn of the loop
            # on every publish, on the way to delivery).
            async with asyncio.timeout(REDIS_PUBLISH_TIMEOUT):
                await streams.publish(redis, claim.rows, maxlen=maxlen)
    if claim.rows:
        PUBLISHED.labels(publisher).inc(len(claim.rows))
        STEP_SECONDS.labels(publisher).observe(time.perf_counter() - started)
    return Published(len(claim.rows), claim.locked)


class OutboxPublisher:
    """The API node's publisher: ``wake(shards)`` after a commit, ``run(stop)`` in the node's lifespan."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, *, maxlen: int, batch_size: int = BATCH_SIZE) -> None:
        self._pool = pool
        self._redis = redis
        self._maxlen = maxlen
        self._batch_size = batch_size
        self._pending: set[int] = set()
        self._wake = asyncio.Event()

    def wake(self, shards: Iterable[int]) -> None:
        """Publish these shards' new rows soon (called by the unit of work right after a commit)."""
        self._pending.update(shards)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            shards, self._pending = self._pending, set()
            await self.publish(shards)

    async def publish(self, shards: Iterable[int]) -> None:
        """Publish every row of ``shards`` committed before this call, waiting for other publishers
        that hold them; on failure or after ``WAIT_SECONDS`` the rows are left to the relay."""
        ordered = sorted(shards)
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                while True:
                    step = await publish_once(
                        self._pool,
                        self._redis,
                        shards=ordered,
                        maxlen=self._maxlen,
                        limit=self._batch_size,
                        publisher="node",
                        wait=True,
                    )
                    if step.count < self._batch_size:
                        return  # every row of these shards committed before the step is published
        except TRANSIENT as exc:
            # The rows are committed and stay in the outbox: the relay publishes them.
            log.warning("publish failed (%s: %s); the relay will publish the rows", type(exc).__name__, exc)
            LEFT_TO_RELAY.inc()
