"""The unit of work: one transaction; ``commit`` flushes the deferred writes, writes the aggregates'
events to the outbox and NOTIFYs the relays, all in one statement, then commits.

The request path never talks to Redis: an event exists for the rest of the system once its outbox
row commits, together with the state change it describes (flow 1 of docs/architecture.md).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.transaction import Transaction

from domain import events
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


class SqlUnitOfWork:
    conversations: SqlConversationRepository
    messages: SqlMessageRepository
    participants: SqlParticipantRepository
    users: SqlUserRepository

    def __init__(self, pool: asyncpg.Pool, *, shard_count: int) -> None:
        self._pool = pool
        self._pending = PendingWrites()
        self._shard_count = shard_count
        self._conn: asyncpg.Connection | None = None
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Self:
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        self._pending = PendingWrites()
        self.conversations = SqlConversationRepository(self._conn, self._pending)
        self.messages = SqlMessageRepository(self._conn)
        self.participants = SqlParticipantRepository(self._conn, self._pending)
        self.users = SqlUserRepository(self._conn)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            await self.rollback()
        finally:
            await self._pool.release(self._conn)
            self._conn = self._tx = None

    async def commit(self) -> None:
        assert self._conn is not None and self._tx is not None
        recorded = [event for conv in self.conversations.seen for event in conv.events]
        if recorded:
            self._pending.add(
                outbox.INSERT_SQL,
                [events.type_name(e) for e in recorded],
                [events.shard_for(e.conversation_id, self._shard_count) for e in recorded],
                [events.encode(e) for e in recorded],
            )
        if self._pending:
            # Deferred writes, outbox rows and the relays' wake-up: one round trip.
            sql, args = self._pending.statement(outbox.NOTIFY_SQL if recorded else "SELECT 1")
            await self._conn.execute(sql, *args)
        await self._tx.commit()
        self._tx = None
        for conv in self.conversations.seen:
            conv.events.clear()

    async def rollback(self) -> None:
        if self._tx is not None:
            tx, self._tx = self._tx, None
            await tx.rollback()
