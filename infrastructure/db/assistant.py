"""What the assistant's worker reads and writes in Postgres, on the asyncpg pool.

Reads are scoped to ONE conversation in their SQL: the context of an answer can only ever contain
messages of the conversation it answers in. ``record_usage`` writes the usage row and its event's
outbox row in one statement, and the event only when the row is new (a re-run records nothing twice).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from domain import events
from domain.assistant import ContextMessage
from domain.values import AssistantSettings, Message
from infrastructure.db.repositories import message_from_row
from infrastructure.db.unit_of_work import OUTBOX_CHANNEL


class AssistantInfo(msgspec.Struct, frozen=True, kw_only=True):
    assistant: AssistantSettings
    member_count: int


async def conversation_assistant(pool: asyncpg.Pool, conversation_id: UUID) -> AssistantInfo | None:
    row = await pool.fetchrow(
        """SELECT c.assistant_enabled, c.assistant_model, c.assistant_system_prompt, c.assistant_provider,
                  c.assistant_temperature,
                  (SELECT count(*) FROM participants p WHERE p.conversation_id = c.id) AS members
           FROM conversations c WHERE c.id = $1""",
        conversation_id,
    )
    if row is None:
        return None
    return AssistantInfo(
        assistant=AssistantSettings(
            enabled=row["assistant_enabled"],
            model=row["assistant_model"],
            system_prompt=row["assistant_system_prompt"],
            provider=row["assistant_provider"],
            temperature=row["assistant_temperature"],
        ),
        member_count=row["members"],
    )


async def stored_answer(pool: asyncpg.Pool, conversation_id: UUID, client_msg_id: str) -> Message | None:
    """The assistant's message with this client id (one per reply), if it was written."""
    row = await pool.fetchrow(
        """SELECT id, conversation_id, seq, sender_id, role, text, client_msg_id, created_at FROM messages
           WHERE conversation_id = $1 AND sender_id IS NULL AND client_msg_id = $2""",
        conversation_id,
        client_msg_id,
    )
    return None if row is None else message_from_row(row)


async def recent_messages(
    pool: asyncpg.Pool, conversation_id: UUID, *, upto_seq: int, limit: int
) -> list[ContextMessage]:
    """The conversation's messages up to and including ``upto_seq``, newest first, with author names."""
    rows = await pool.fetch(
        """SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.role, m.text, m.client_msg_id, m.created_at,
                  u.name AS author
           FROM messages m LEFT JOIN users u ON u.id = m.sender_id
           WHERE m.conversation_id = $1 AND m.seq <= $2
           ORDER BY m.seq DESC LIMIT $3""",
        conversation_id,
        upto_seq,
        limit,
    )
    return [ContextMessage(message=message_from_row(r), author=r["author"]) for r in rows]


async def user_names(pool: asyncpg.Pool, user_ids: list[UUID]) -> dict[UUID, str]:
    if not user_ids:
        return {}
    rows = await pool.fetch("SELECT id, name FROM users WHERE id = ANY($1::uuid[])", user_ids)
    return {r["id"]: r["name"] for r in rows}


async def tokens_spent_since(pool: asyncpg.Pool, user_id: UUID, since: datetime) -> int:
    spent = await pool.fetchval(
        """SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM assistant_usage
           WHERE user_id = $1 AND created_at >= $2""",
        user_id,
        since,
    )
    return int(spent)


_RECORD = f"""
    WITH u AS (
        INSERT INTO assistant_usage (reply_id, attempt, conversation_id, user_id, provider, model, input_tokens,
                                     output_tokens, cost_usd, ttft_ms, duration_ms, status, error, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT DO NOTHING RETURNING 1
    ), o AS (
        INSERT INTO outbox (event_type, shard, payload)
        SELECT $15, $16, $17 WHERE EXISTS (SELECT 1 FROM u) RETURNING 1
    )
    SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM o
"""


async def record_usage(
    pool: asyncpg.Pool, event: events.AssistantUsageRecorded, *, error: str | None, shard_count: int
) -> None:
    e = event
    await pool.execute(
        _RECORD,
        e.reply_id, e.attempt, e.conversation_id, e.user_id, e.provider, e.model, e.input_tokens, e.output_tokens,
        e.cost, e.ttft_ms, e.duration_ms, e.status, error, e.occurred_at,
        events.type_name(e), events.shard_for(e.conversation_id, shard_count), events.encode(e),
    )  # fmt: skip
