"""The unit of work: one transaction; ``commit`` writes the aggregates' events to the outbox and NOTIFYs.

The request path never talks to Redis: an event exists for the rest of the system once its outbox
row commits, together with the state change it describes (flow 1 of docs/architecture).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from domain import events
from infrastructure.db.repositories import (
    SqlConversationRepository,
    SqlMessageRepository,
    SqlParticipantRepository,
    SqlUserRepository,
)
from infrastructure.db.tables import outbox

#: The channel relays LISTEN on; the payload is empty (a relay drains every shard it owns).
OUTBOX_CHANNEL = "parley_outbox"


class SqlUnitOfWork:
    conversations: SqlConversationRepository
    messages: SqlMessageRepository
    participants: SqlParticipantRepository
    users: SqlUserRepository

    def __init__(self, engine: AsyncEngine, *, shard_count: int) -> None:
        self._engine = engine
        self._shard_count = shard_count
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None

    async def __aenter__(self) -> Self:
        self._conn = await self._engine.connect()
        self._tx = await self._conn.begin()
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
            if self._tx is not None and self._tx.is_active:
                await self._tx.rollback()
        finally:
            await self._conn.close()
            self._conn = self._tx = None

    async def commit(self) -> None:
        assert self._conn is not None and self._tx is not None
        pending = [event for conv in self.conversations.seen for event in conv.events]
        if pending:
            await self._conn.execute(
                sa.insert(outbox),
                [
                    {
                        "event_type": events.type_name(event),
                        "shard": events.shard_for(event.conversation_id, self._shard_count),
                        "payload": events.encode(event),
                    }
                    for event in pending
                ],
            )
            await self._conn.execute(sa.select(sa.func.pg_notify(OUTBOX_CHANNEL, "")))
        await self._tx.commit()
        for conv in self.conversations.seen:
            conv.events.clear()

    async def rollback(self) -> None:
        if self._tx is not None and self._tx.is_active:
            await self._tx.rollback()
