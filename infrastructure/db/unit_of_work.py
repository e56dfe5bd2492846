"""The unit of work: one transaction; ``commit`` flushes the deferred writes and writes the aggregates'
events to the outbox in one statement, then commits, then hands the touched shards to the process's
outbox publisher (API nodes publish what they wrote at once). Where no publisher runs (workers, CLI),
the statement NOTIFYs the relays instead.

The transaction never talks to Redis: an event exists for the rest of the system once its outbox row
commits, together with the state change it describes (flow 1 of docs/architecture.md); publishing is
after the commit, and the relay publishes whatever a crashed process committed but did not publish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.transaction import Transaction

from domain import events
from infrastructure import failpoints
from infrastructure.db import outbox
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


class SqlUnitOfWork:
    conversations: SqlConversationRepository
    messages: SqlMessageRepository
    participants: SqlParticipantRepository
    users: SqlUserRepository

    def __init__(
        self, pool: asyncpg.Pool, *, shard_count: int, on_commit: Callable[[set[int]], None] | None = None
    ) -> None:
        self._pool = pool
        self._pending = PendingWrites()
        self._shard_count = shard_count
        #: Called after a commit with the shards its events went to (the local publisher's ``wake``);
        #: None: NOTIFY the relays in the commit's statement instead.
        self._on_commit = on_commit
        self._conn: asyncpg.Connection | None = None
        self._tx: Transaction | None = None
        #: Pass this as the handler's clock to stamp with the database's time (``post_message``).
        self.clock = DatabaseClock(self)

    @property
    def active(self) -> bool:
        return self._conn is not None

    async def __aenter__(self) -> Self:
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction()
        try:
            await self._tx.start()
        except BaseException:
            await self._discard_connection()  # __aexit__ does not run when __aenter__ raises
            raise
        self._pending = PendingWrites()
        self.conversations = SqlConversationRepository(self._conn, self._pending)
        self.messages = SqlMessageRepository(self._conn, self._pending)
        self.participants = SqlParticipantRepository(self._conn, self._pending)
        self.users = SqlUserRepository(self._conn)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        if self._tx is None and exc is None:
            # Committed: the connection goes back to the pool in the background. asyncpg's release is
            # two turns of the event loop (a shielded task), which every acked post waited for.
            self._release_soon()
            return
        try:
            await self.rollback()
        except BaseException:
            # A connection that cannot roll back (PostgreSQL went away, an operation was cut off) is
            # not handed to the next caller. The error that got us here, if any, is the one to report.
            await self._discard_connection()
            if exc is None:
                raise
            return
        await self._pool.release(self._conn)
        self._conn = self._tx = None

    def _release_soon(self) -> None:
        assert self._conn is not None
        conn, self._conn = self._conn, None
        task = asyncio.ensure_future(self._pool.release(conn))
        _releasing.add(task)  # held until done (the loop keeps only a weak reference to a task)
        task.add_done_callback(_released)

    async def _discard_connection(self) -> None:
        assert self._conn is not None
        conn, self._conn, self._tx = self._conn, None, None
        conn.terminate()
        await self._pool.release(conn)

    async def commit(self) -> None:
        assert self._conn is not None and self._tx is not None
        recorded = [event for conv in self.conversations.seen for event in conv.events]
        shards = [events.shard_for(e.conversation_id, self._shard_count) for e in recorded]
        if recorded:
            self._pending.add_outbox(
                [events.type_name(e) for e in recorded], shards, [events.encode(e) for e in recorded]
            )
        if self._pending:
            # Deferred writes, outbox rows and (without a local publisher) the relays' wake-up: one round trip.
            notify = recorded and self._on_commit is None
            sql, args = self._pending.statement(outbox.NOTIFY_SQL if notify else "SELECT 1")
            await self._conn.execute(sql, *args)
        await self._tx.commit()
        self._tx = None
        failpoints.hit("after-commit")  # crash tests: durable, but neither published nor answered
        for conv in self.conversations.seen:
            conv.events.clear()
        if shards and self._on_commit is not None:
            self._on_commit(set(shards))

    async def rollback(self) -> None:
        if self._tx is not None:
            tx, self._tx = self._tx, None
            await tx.rollback()
