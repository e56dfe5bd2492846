"""The unit of work: one transaction; ``commit`` writes the aggregates' events to the outbox and NOTIFYs.

The request path never talks to Redis: an event exists for the rest of the system once its outbox
row commits, together with the state change it describes (flow 1 of docs/architecture.md).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.transaction import Transaction

from domain import events
from infrastructure.db.repositories import (
    SqlConversationRepository,
    SqlMessageRepository,
    SqlParticipantRepository,
    SqlUserRepository,
)

#: The channel relays LISTEN on; the payload is empty (a relay drains every shard it owns).
OUTBOX_CHANNEL = "parley_outbox"

# One round trip for all of a commit's events and the wake-up of the relays. unnest keeps array order,
# so outbox ids follow the order the aggregates recorded their events in.
_WRITE_OUTBOX = f"""
    WITH written AS (
        INSERT INTO outbox (event_type, shard, payload)
        SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[])
    )
    SELECT pg_notify('{OUTBOX_CHANNEL}', '')
"""


class SqlUnitOfWork:
    conversations: SqlConversationRepository
    messages: SqlMessageRepository
    participants: SqlParticipantRepository
    users: SqlUserRepository

    def __init__(self, pool: asyncpg.Pool, *, shard_count: int) -> None:
        self._pool = pool
        self._shard_count = shard_count
        self._conn: asyncpg.Connection | None = None
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Self:
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        self.conversations = SqlConversationRepository(self._conn)
        self.messages = SqlMessageRepository(self._conn)
        self.participants = SqlParticipantRepository(self._conn)
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
        pending = [event for conv in self.conversations.seen for event in conv.events]
        if pending:
            await self._conn.execute(
                _WRITE_OUTBOX,
                [events.type_name(e) for e in pending],
                [events.shard_for(e.conversation_id, self._shard_count) for e in pending],
                [events.encode(e) for e in pending],
            )
        await self._tx.commit()
        self._tx = None
        for conv in self.conversations.seen:
            conv.events.clear()

    async def rollback(self) -> None:
        if self._tx is not None:
            tx, self._tx = self._tx, None
            await tx.rollback()
