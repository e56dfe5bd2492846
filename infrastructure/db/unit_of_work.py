"""The unit of work: one transaction; ``commit`` flushes the deferred writes and writes the aggregates'
events to the outbox in one statement, then commits. In an API node (a ``publisher`` is given) the
unit of work takes the publish keys of the conversations it writes (``outbox.KeyLocks``: before their
row locks, in the repositories' locking reads), its commit statement also returns the rows to publish,
and after the commit the connection goes to the publisher with those rows, still holding the keys
(``infrastructure/outbox_publisher.py``), which, its publish step over, sends the next BEGIN on it and
leaves it for the next unit of work (``infrastructure/db/begun.py``: one round trip less before an
ack). Where no publisher runs (workers, CLI), the statement NOTIFYs the relays instead.

The transaction never talks to Redis: an event exists for the rest of the system once its outbox row
commits, together with the state change it describes (flow 1 of docs/architecture.md); publishing is
after the commit, and the relay publishes whatever a crashed process committed but did not publish.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self

import asyncpg

from domain import events
from infrastructure import failpoints
from infrastructure.db import outbox
from infrastructure.db.begun import BEGIN_SQL, BegunConnections
from infrastructure.db.repositories import (
    PendingWrites,
    SqlConversationRepository,
    SqlMessageRepository,
    SqlParticipantRepository,
    SqlUserRepository,
)

#: Kept for callers that LISTEN; the outbox's pieces live in ``infrastructure.db.outbox``.
OUTBOX_CHANNEL = outbox.CHANNEL

log = logging.getLogger("parley.db")

#: Connections being handed back to their pool after a commit (``SqlUnitOfWork._release_soon``).
_releasing: set[asyncio.Future[None]] = set()


def _released(task: asyncio.Future[None]) -> None:
    _releasing.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("returning a connection to the pool failed (%s: %s)", type(exc).__name__, exc)


class DatabaseClock:
    """``Clock`` for handlers run in this unit of work: the database's time read with the conversation
    row it locked (no extra round trip), so every node stamps messages with one clock, and never
    earlier than the conversation's last change. Before any row is loaded it is this process' clock."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    def now(self) -> datetime:
        db_now = self._uow.conversations.db_now if self._uow.active else None
        return db_now if db_now is not None else datetime.now(UTC)


class CommitPublisher(Protocol):
    def hand_over(self, conn: asyncpg.Connection, rows: list[outbox.OutboxRow]) -> None:
        """Publish ``rows``, release the publish keys ``conn`` holds, give ``conn`` back to its pool."""


class SqlUnitOfWork:
    conversations: SqlConversationRepository
    messages: SqlMessageRepository
    participants: SqlParticipantRepository
    users: SqlUserRepository

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        shard_count: int,
        publisher: CommitPublisher | None = None,
        begun: BegunConnections | None = None,
    ) -> None:
        self._pool = pool
        #: Connections with their BEGIN sent ahead (``infrastructure/db/begun.py``), taken before the pool.
        self._begun = begun
        self._pending = PendingWrites()
        self._shard_count = shard_count
        #: Publishes this unit of work's events after its commit; None: NOTIFY the relays instead.
        self._publisher = publisher
        #: The publish keys held (with a publisher).
        self._keys: outbox.KeyLocks | None = None
        self._conn: asyncpg.Connection | None = None
        #: A transaction is open on ``_conn`` (neither committed nor rolled back).
        self._open = False

    @property
    def clock(self) -> DatabaseClock:
        """Pass this as the handler's clock to stamp with the database's time (``post_messages``).
        A new one per access, not an attribute: a unit of work that held its own clock would be a
        reference cycle, and every post's unit of work (its repositories, rows and aggregates, some
        25 objects) garbage that only the cyclic collector frees, in pauses of 10 to 40 ms on a
        loaded node (docs/perf/README.md, "Garbage")."""
        return DatabaseClock(self)

    @property
    def active(self) -> bool:
        return self._conn is not None

    async def __aenter__(self) -> Self:
        begun = None if self._begun is None else self._begun.take()
        if begun is not None:
            self._conn, self._open = begun, True  # BEGIN_SQL already ran on it
        else:
            self._conn = await self._pool.acquire()
            try:
                await self._conn.execute(BEGIN_SQL)
                self._open = True
            except BaseException:
                await self._discard_connection()  # __aexit__ does not run when __aenter__ raises
                raise
        self._pending = PendingWrites()
        self._keys = None if self._publisher is None else outbox.KeyLocks(self._shard_count)
        self.conversations = SqlConversationRepository(self._conn, self._pending, self._keys)
        self.messages = SqlMessageRepository(self._conn, self._pending)
        self.participants = SqlParticipantRepository(self._conn, self._pending)
        self.users = SqlUserRepository(self._conn)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._open and exc is None:
            # Committed: the connection went to the publisher, or goes back to the pool in the background
            # (asyncpg's release is two turns of the event loop, a shielded task, which every acked post
            # waited for).
            if self._conn is not None:
                self._release_soon()
            return
        assert self._conn is not None
        try:
            await self.rollback()
            if self._keys is not None and self._keys.held:
                await self._conn.execute(outbox.RELEASE_SQL, [])  # session locks outlive the rollback
        except BaseException:
            # A connection that cannot roll back (PostgreSQL went away, an operation was cut off) is
            # not handed to the next caller. The error that got us here, if any, is the one to report.
            await self._discard_connection()
            if exc is None:
                raise
            return
        await self._pool.release(self._conn)
        self._conn = None

    def _release_soon(self) -> None:
        assert self._conn is not None
        conn, self._conn = self._conn, None
        task = asyncio.ensure_future(self._pool.release(conn))
        _releasing.add(task)  # held until done (the loop keeps only a weak reference to a task)
        task.add_done_callback(_released)

    async def _discard_connection(self) -> None:
        assert self._conn is not None
        conn, self._conn, self._open = self._conn, None, False
        conn.terminate()
        await self._pool.release(conn)

    async def commit(self) -> None:
        assert self._conn is not None and self._open
        recorded = [event for conv in self.conversations.seen for event in conv.events]
        rows: list[outbox.OutboxRow] = []
        if recorded:
            if self._keys is not None:  # a conversation not locked through the repository (a new one, a read cursor)
                await self._keys.take(self._conn, {e.conversation_id for e in recorded})
            rows = [
                outbox.OutboxRow(0, events.shard_for(e.conversation_id, self._shard_count), events.type_name(e),
                                 events.encode(e))
                for e in recorded
            ]  # fmt: skip
            self._pending.add_outbox(
                [r.event_type for r in rows], [r.shard for r in rows], [r.payload for r in rows],
                [outbox.lock_key(e.conversation_id) for e in recorded],
            )  # fmt: skip
        publishing = self._keys is not None and bool(self._keys.held)
        if self._pending:
            # Deferred writes, outbox rows and either the relays' wake-up or (holding publish keys) the
            # rows to publish: one round trip.
            sql, args = self._pending.statement(notify=bool(recorded) and self._publisher is None, publish=self._keys)
            if publishing:
                rows = _to_publish(await self._conn.fetch(sql, *args), rows)
            else:
                await self._conn.execute(sql, *args)
        await self._conn.execute("COMMIT")
        self._open = False
        failpoints.hit("after-commit")  # crash tests: durable, but neither published nor answered
        for conv in self.conversations.seen:
            conv.events.clear()
        if publishing:
            assert self._publisher is not None
            conn, self._conn = self._conn, None
            self._publisher.hand_over(conn, rows)

    async def rollback(self) -> None:
        if self._open:
            assert self._conn is not None
            self._open = False
            await self._conn.execute("ROLLBACK")


def _to_publish(records: list[asyncpg.Record], own: list[outbox.OutboxRow]) -> list[outbox.OutboxRow]:
    """The commit statement's answer (rows of held keys nobody published, then the ids of this commit's
    own rows) as the rows to publish, oldest first; this commit's own come from memory."""
    leftovers = [
        outbox.OutboxRow(r["id"], r["shard"], r["event_type"], r["payload"])
        for r in records
        if r["event_type"] is not None
    ]
    ids = sorted(r["id"] for r in records if r["event_type"] is None)  # drawn in the order they were added
    assert len(ids) == len(own), "the commit statement returned another number of outbox ids"
    return leftovers + [outbox.OutboxRow(i, r.shard, r.event_type, r.payload) for i, r in zip(ids, own, strict=True)]
