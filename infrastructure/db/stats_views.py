"""Admin statistics (``GET /api/admin/stats``) from the analyst views over the read models
(``stats_active_users_daily``, ``stats_conversation_daily``, ``stats_user_daily``, ``stats_llm_usage_daily``).
Only administrators reach these; they read no message content."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from infrastructure.db.read_models import NIL


class DayTotals(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    messages: int
    active_users: int


class ConversationDay(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    conversation_id: UUID
    messages: int
    assistant_messages: int
    active_users: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UserDay(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    user_id: UUID
    messages: int
    conversations: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class ModelUsage(msgspec.Struct, frozen=True, kw_only=True):
    """LLM usage over the whole range by provider, model and triggering user (None: no user)."""

    provider: str
    model: str
    user_id: UUID | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    from_day: date = msgspec.field(name="from")
    to_day: date = msgspec.field(name="to")
    days: list[DayTotals]
    conversations: list[ConversationDay]
    users: list[UserDay]
    llm_usage: list[ModelUsage]
    #: True when a section was cut at ``limit`` rows.
    truncated: bool


def _float_cost(row: asyncpg.Record) -> dict[str, Any]:
    values = dict(row)
    values["cost_usd"] = float(values["cost_usd"])
    return values


async def stats(pool: asyncpg.Pool, *, start: date, end: date, limit: int) -> Stats:
    """Everything between ``start`` and ``end`` (UTC days, inclusive)."""
    days = await pool.fetch(
        "SELECT day, messages, active_users FROM stats_active_users_daily WHERE day BETWEEN $1 AND $2 ORDER BY day",
        start,
        end,
    )
    conversations = await pool.fetch(
        """SELECT * FROM stats_conversation_daily WHERE day BETWEEN $1 AND $2
           ORDER BY day, messages DESC, conversation_id LIMIT $3""",
        start,
        end,
        limit + 1,
    )
    users = await pool.fetch(
        """SELECT * FROM stats_user_daily WHERE day BETWEEN $1 AND $2
           ORDER BY day, messages DESC, user_id LIMIT $3""",
        start,
        end,
        limit + 1,
    )
    usage = await pool.fetch(
        """SELECT provider, model, NULLIF(user_id, $3) AS user_id, sum(calls)::bigint AS calls,
                  sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
                  sum(cost_usd) AS cost_usd
           FROM stats_llm_usage_daily WHERE day BETWEEN $1 AND $2
           GROUP BY provider, model, user_id ORDER BY sum(cost_usd) DESC, provider, model LIMIT $4""",
        start,
        end,
        NIL,
        limit + 1,
    )
    return Stats(
        from_day=start,
        to_day=end,
        days=[DayTotals(**dict(r)) for r in days],
        conversations=[ConversationDay(**_float_cost(r)) for r in conversations[:limit]],
        users=[UserDay(**_float_cost(r)) for r in users[:limit]],
        llm_usage=[ModelUsage(**_float_cost(r)) for r in usage[:limit]],
        truncated=max(len(conversations), len(users), len(usage)) > limit,
    )
