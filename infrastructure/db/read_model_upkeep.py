"""Read-model upkeep beside the per-conversation projection (``read_models.py``): LLM usage statistics
(additive, so deduplicated by event id), the sweep's search for conversations whose events were lost, and
the unread-total recount of a rebuild."""

from __future__ import annotations

from datetime import UTC
from uuid import UUID

import asyncpg

from domain import events
from infrastructure.db.read_models import NIL

# -- LLM usage --------------------------------------------------------------------------------------------

_ADD_USAGE = """
    WITH fresh AS (
        INSERT INTO projected_usage_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING event_id
    )
    INSERT INTO stats_llm_usage_daily AS s
        (day, conversation_id, user_id, provider, model, calls, input_tokens, output_tokens, cost_usd)
    SELECT $2, $3, $4, $5, $6, 1, $7, $8, $9 FROM fresh
    ON CONFLICT (day, conversation_id, user_id, provider, model) DO UPDATE SET
        calls = s.calls + 1, input_tokens = s.input_tokens + excluded.input_tokens,
        output_tokens = s.output_tokens + excluded.output_tokens, cost_usd = s.cost_usd + excluded.cost_usd
"""


async def add_usage(conn: asyncpg.Connection, event: events.AssistantUsageRecorded) -> None:
    """Count an LLM call once (by event id) in the day's usage statistics."""
    await conn.execute(
        _ADD_USAGE,
        event.event_id,
        event.occurred_at.astimezone(UTC).date(),
        event.conversation_id,
        event.user_id or NIL,
        event.provider,
        event.model,
        event.input_tokens,
        event.output_tokens,
        round(event.cost, 6),
    )


# -- whole-model maintenance -----------------------------------------------------------------------------


async def stale_conversations(conn: asyncpg.Connection, *, older_than_seconds: float, limit: int) -> list[UUID]:
    """Conversations whose projection is behind the write tables with no recent write (their events were
    lost or trimmed, since a live event would have arrived by now), or deleted yet still projected."""
    rows = await conn.fetch(
        """
        (SELECT c.id FROM conversations c LEFT JOIN projection_state s ON s.conversation_id = c.id
         WHERE (s.conversation_id IS NULL OR c.last_seq > s.applied_seq)
           AND c.updated_at < now() - make_interval(secs => $1)
         LIMIT $2)
        UNION
        (SELECT s.conversation_id FROM projection_state s
         WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = s.conversation_id)
         LIMIT $2)
        """,
        older_than_seconds,
        limit,
    )
    return [r[0] for r in rows]


async def recount_totals(conn: asyncpg.Connection) -> None:
    """Set every unread total from the list rows (rebuild). Blocks list writes for its duration only."""
    await conn.execute("LOCK TABLE read_conversation_list IN SHARE ROW EXCLUSIVE MODE")
    await conn.execute("DELETE FROM read_unread_totals")
    await conn.execute(
        """INSERT INTO read_unread_totals (user_id, total)
           SELECT user_id, sum(unread_count) FROM read_conversation_list GROUP BY user_id"""
    )
