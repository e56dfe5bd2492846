"""Flow 2, outbox -> Redis Streams: the relay's publish step, and the API node's own publisher.

``publish_once`` is the relay's step, in one transaction: lock the shards no other relay holds, take
the oldest committed rows of those shards whose publish keys it can take (``outbox.CLAIM_SQL``), XADD
them in one pipeline, commit (which deletes them). A crash between XADD and commit publishes the rows
again, and consumers absorb the duplicates by seq.

``OutboxPublisher`` runs in each API node (flow 1 -> 2 without a process hop or a second transaction).
The unit of work holds the publish keys of the conversations it wrote, past its COMMIT, and hands the
connection over with the rows to publish: the rows of those keys nobody had published, then its own,
oldest first, its own straight from memory. The publisher XADDs them, then deletes them and lets the
keys go in one statement (``outbox.RELEASE_SQL``), and gives the connection back: with its next BEGIN
sent, to wait for the next unit of work (``infrastructure/db/begun.py``), or to the pool. Whoever
writes one of those conversations next waits for its key, so each conversation's events reach its
stream in commit order, whichever node wrote them (``infrastructure/db/outbox.py``, migration 0011).
If Redis refuses or does not answer within ``NODE_PUBLISH_TIMEOUT``, the rows stay in the outbox and
the keys go anyway: the next writer of the conversation or the relay publishes them. A publish in
flight holds its conversations' keys, which their next posts wait for, so after a failure the node
stops publishing for ``RELAY_ONLY_SECONDS`` (``healthy`` is False: its units of work take no keys and
NOTIFY the relay, and posts are acked at the speed of PostgreSQL alone while Redis is down). The relay
(``workers/outbox_relay.py``) is the safety net.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infrastructure.db import outbox
from infrastructure.db.begun import BegunConnections
from infrastructure.db.outbox import OutboxRow
from infrastructure.redis import streams

log = logging.getLogger("parley.publisher")

#: Rows per relay step: large enough to amortise the round trips, small enough to keep transactions short.
BATCH_SIZE = 500
#: Bound on the relay's XADD pipeline, well inside the lease of the locks held meanwhile (``outbox.LEASE_MS``).
REDIS_PUBLISH_TIMEOUT = 2.0
#: Bound on a node's XADD: the posts to its conversations wait meanwhile. A healthy one takes a millisecond.
NODE_PUBLISH_TIMEOUT = 0.5
#: After a failed publish a node leaves publishing to the relay this long, then tries again.
RELAY_ONLY_SECONDS = 1.0

PUBLISHED = Counter("parley_outbox_published_total", "Outbox events published to Redis Streams", ["publisher"])
STEP_SECONDS = Histogram(
    "parley_outbox_publish_seconds",
    "One publish: the relay's claim + XADD + commit; a node's XADD + delete after its commit",
    ["publisher"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
_NODE_PUBLISHED, _NODE_STEP_SECONDS = PUBLISHED.labels("node"), STEP_SECONDS.labels("node")
LEFT_TO_RELAY = Counter(
    "parley_outbox_left_to_relay_total", "Publishes an API node gave up (the relay publishes the rows)"
)

#: What makes one publish fail for now (the rows stay in the outbox).
TRANSIENT = (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, TimeoutError)


async def publish_once(
    pool: asyncpg.Pool, redis: Redis, *, shards: Sequence[int], maxlen: int, limit: int = BATCH_SIZE
) -> int:
    """The relay's step; returns how many rows it published."""
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        rows = await outbox.claim(conn, shards=shards, limit=limit)
        if rows:
            # Bounded: a paused Redis must not keep the shards until the lease runs out. asyncio.timeout,
            # not wait_for, which on Python 3.11 runs the call in a task of its own.
            async with asyncio.timeout(REDIS_PUBLISH_TIMEOUT):
                await streams.publish(redis, rows, maxlen=maxlen)
    if rows:
        PUBLISHED.labels("relay").inc(len(rows))
        STEP_SECONDS.labels("relay").observe(time.perf_counter() - started)
    return len(rows)


class OutboxPublisher:
    """The API node's publisher: ``hand_over`` after a commit, ``close`` when the node stops."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, *, maxlen: int, begun: BegunConnections | None = None) -> None:
        self._pool = pool
        #: Where a connection goes after its publish step, its next BEGIN sent (else: to the pool).
        self._begun = begun
        self._redis = redis
        self._maxlen = maxlen
        self._running: set[asyncio.Task[None]] = set()
        self._relay_only_until = 0.0

    @property
    def healthy(self) -> bool:
        """False for ``RELAY_ONLY_SECONDS`` after a failed publish: commits should leave publishing to the
        relay (and take no publish keys) meanwhile."""
        return time.monotonic() >= self._relay_only_until

    def hand_over(self, conn: asyncpg.Connection, rows: list[OutboxRow]) -> None:
        """Publish ``rows`` (oldest first) and release the keys ``conn`` holds, then give ``conn`` back
        (begun ahead, or to the pool). In a task of its own: the posts of the commit are answered meanwhile."""
        task = asyncio.create_task(self._publish(conn, rows))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def close(self) -> None:
        """Let the publishes in flight finish."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _publish(self, conn: asyncpg.Connection, rows: list[OutboxRow]) -> None:
        started = time.perf_counter()
        published: list[int] = []
        if rows:
            try:
                async with asyncio.timeout(NODE_PUBLISH_TIMEOUT):
                    await streams.publish(self._redis, rows, maxlen=self._maxlen)
                published = [row.id for row in rows]
            except TRANSIENT as exc:
                # The rows are committed and stay in the outbox: the relay (or the conversation's next
                # writer) publishes them once the keys are released below.
                LEFT_TO_RELAY.inc()
                if self.healthy:
                    log.warning(
                        "publish failed (%s: %s); the relay publishes this node's commits for the next %.0f s",
                        type(exc).__name__, exc, RELAY_ONLY_SECONDS,
                    )  # fmt: skip
                self._relay_only_until = time.monotonic() + RELAY_ONLY_SECONDS
        try:
            await conn.execute(outbox.RELEASE_SQL, published)
        except BaseException as exc:
            # The keys must not outlive this: closing the session releases them. Rows published but not
            # deleted are published again by the relay; consumers drop the duplicates.
            conn.terminate()
            await self._pool.release(conn)
            if not isinstance(exc, Exception):
                raise
            log.warning("releasing publish keys failed (%s: %s); connection closed", type(exc).__name__, exc)
            return
        if published:
            _NODE_PUBLISHED.inc(len(published))
            _NODE_STEP_SECONDS.observe(time.perf_counter() - started)
        if self._begun is not None:
            await self._begun.keep(conn)
        else:
            await self._pool.release(conn)
