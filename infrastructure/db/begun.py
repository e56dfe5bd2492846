"""Flow 1: a post's BEGIN sent ahead, off its path.

A post's transaction is four round trips to PostgreSQL before its ack: BEGIN, the lock call, the
write statement and COMMIT, each a turn of two busy event loops (the node's and the backend's). At
500 msg/s on two cores a transaction carries about one post and takes 3.3 ms, 0.8 ms a round trip
(``parley_post_transaction_seconds`` and ``parley_post_batch_size``; docs/perf/README.md). The BEGIN
carries nothing of the post. So the node's publisher, which holds the previous commit's connection
until its publish step is over (``infrastructure/outbox_publisher.py``), sends the next BEGIN on it
right away and leaves the connection here; the next unit of work takes it and starts with its first
real statement (``SqlUnitOfWork.__aenter__``). When none is here, a unit of work takes a connection
from the pool and sends BEGIN itself, as before.

What waiting costs: the one connection here is out of the pool, and it shows as "idle in
transaction" in ``pg_stat_activity``. Its transaction has no snapshot and no transaction id yet
(BEGIN and SET LOCAL take none), so it holds back neither vacuum nor anyone's locks. It waits at most
``READY_SECONDS``: then it is rolled back and given back to the pool, so an idle node keeps no open
transaction, and a server-side ``idle_in_transaction_session_timeout`` longer than a second never
ends one. A connection that PostgreSQL closed meanwhile is not handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from prometheus_client import Counter

log = logging.getLogger("parley.db")

# BEGIN, and the planner settings of this transaction, in one round trip (the simple-query protocol
# runs the three statements in one message). Every statement of a unit of work finds rows by key, through
# arrays of one to a few hundred keys; with custom plans (PostgreSQL's choice for those arrays, whose
# length a custom plan sees) PostgreSQL planned each statement on every execution, a quarter of its CPU
# per post under ``bench/fanout.py``. Generic plans are planned once per connection; without sequential
# scans they are index scans at every table size (a generic plan cannot see that an array holds one
# key, and on small tables it would scan them). SET LOCAL: the pool's other users are not affected.
BEGIN_SQL = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off"

#: How long the connection waits before it is rolled back and given back to the pool.
READY_SECONDS = 1.0

BEGUN_AHEAD = Counter(
    "parley_db_begun_ahead_total",
    "Connections whose BEGIN was sent ahead of their unit of work, by what became of them "
    "(used: a unit of work started on one; expired: rolled back unused; lost: closed meanwhile)",
    ["outcome"],
)
_USED, _EXPIRED, _LOST = (BEGUN_AHEAD.labels(o) for o in ("used", "expired", "lost"))


class BegunConnections:
    """``keep`` a connection out of any transaction (BEGIN is sent here); ``take`` it in a transaction.
    One waits at most: with one transaction in flight per node, a second would never be taken in time."""

    def __init__(self, pool: asyncpg.Pool, *, ready_seconds: float = READY_SECONDS) -> None:
        self._pool = pool
        self._ready_seconds = ready_seconds
        #: The waiting connection and the timer that gives it back.
        self._waiting: tuple[asyncpg.Connection, asyncio.TimerHandle] | None = None
        #: Rollbacks and releases in flight (the loop keeps only weak references to tasks).
        self._returning: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def ready(self) -> int:
        """Connections waiting: 0 or 1."""
        return 0 if self._waiting is None else 1

    def take(self) -> asyncpg.Connection | None:
        """A connection with its BEGIN sent, for the caller to use and then commit or roll back (it is
        the caller's from now on, as if acquired from the pool and begun); None when there is none."""
        if self._waiting is None:
            return None
        (conn, timer), self._waiting = self._waiting, None
        timer.cancel()
        if _alive(conn):
            _USED.inc()
            return conn
        _LOST.inc()
        self._give_back(conn, rollback=False)
        return None

    async def keep(self, conn: asyncpg.Connection) -> None:
        """Send BEGIN on ``conn`` (acquired from the pool, in no transaction) and keep it for the next
        ``take``; when one waits already, or the BEGIN fails, it goes back to the pool instead."""
        if self._full():
            await self._pool.release(conn)
            return
        try:
            await conn.execute(BEGIN_SQL)
        except Exception as exc:
            log.debug("BEGIN ahead failed (%s: %s); connection closed", type(exc).__name__, exc)
            _terminate(conn)
            await self._pool.release(conn)
            return
        if self._full():  # filled (or closed) while the BEGIN ran
            await self._roll_back_and_release(conn)
            return
        self._waiting = (conn, asyncio.get_running_loop().call_later(self._ready_seconds, self._expire, conn))

    def _full(self) -> bool:
        """No room for another connection: one waits, or this was closed."""
        return self._closed or self._waiting is not None

    async def close(self) -> None:
        """Roll back and give back the waiting connection; from now on ``keep`` keeps none."""
        self._closed = True
        if self._waiting is not None:
            (conn, timer), self._waiting = self._waiting, None
            timer.cancel()
            self._give_back(conn, rollback=_alive(conn))
        while self._returning:
            await asyncio.gather(*self._returning, return_exceptions=True)

    def _expire(self, conn: asyncpg.Connection) -> None:
        if self._waiting is not None and self._waiting[0] is conn:
            self._waiting = None
            _EXPIRED.inc()
            self._give_back(conn, rollback=True)

    def _give_back(self, conn: asyncpg.Connection, *, rollback: bool) -> None:
        task = asyncio.ensure_future(self._roll_back_and_release(conn) if rollback else self._pool.release(conn))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def _roll_back_and_release(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.execute("ROLLBACK")
        except Exception as exc:  # the pool must not hand out a connection left in a transaction
            log.debug("rollback of a connection begun ahead failed (%s: %s); closed", type(exc).__name__, exc)
            _terminate(conn)
        await self._pool.release(conn)


def _alive(conn: asyncpg.Connection) -> bool:
    """Open and still ours: when PostgreSQL ends a pooled connection, the pool takes it back at once
    (its proxy then refuses every call)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _terminate(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(asyncpg.InterfaceError):  # already taken back by the pool: nothing to end
        conn.terminate()
