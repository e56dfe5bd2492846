"""Read models (flow 4): per-user conversation list, unread totals (kept by triggers), projection state,
daily statistics and LLM usage, and the analyst views over them (docs/analytics.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 16:00:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_NIL = "'00000000-0000-0000-0000-000000000000'::uuid"

# read_unread_totals follows read_conversation_list: one statement-level trigger per operation sums the
# changes per user (transition tables), in user order so that concurrent transactions lock totals rows
# in the same order.
_TOTALS_FUNCTION = """
CREATE FUNCTION read_unread_totals_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO read_unread_totals AS t (user_id, total)
        SELECT user_id, sum(unread_count) FROM new_rows GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET total = t.total + excluded.total;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE read_unread_totals AS t SET total = t.total - d.total
        FROM (SELECT user_id, sum(unread_count) AS total FROM old_rows GROUP BY user_id) AS d
        WHERE t.user_id = d.user_id AND d.total <> 0;
    ELSE
        INSERT INTO read_unread_totals AS t (user_id, total)
        SELECT user_id, sum(delta) FROM (
            SELECT user_id, unread_count AS delta FROM new_rows
            UNION ALL
            SELECT user_id, -unread_count FROM old_rows
        ) AS changes
        GROUP BY user_id HAVING sum(delta) <> 0 ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET total = t.total + excluded.total;
    END IF;
    RETURN NULL;
END
$$
"""
_TRIGGERS = {
    "read_unread_totals_on_insert": "AFTER INSERT ON read_conversation_list REFERENCING NEW TABLE AS new_rows",
    "read_unread_totals_on_update": (
        "AFTER UPDATE ON read_conversation_list REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    "read_unread_totals_on_delete": "AFTER DELETE ON read_conversation_list REFERENCING OLD TABLE AS old_rows",
}

_VIEWS = {
    "stats_conversation_daily": f"""
        WITH activity AS (
            SELECT day, conversation_id,
                   sum(messages) AS messages,
                   coalesce(sum(messages) FILTER (WHERE actor_id = {_NIL}), 0) AS assistant_messages,
                   count(*) FILTER (WHERE actor_id <> {_NIL}) AS active_users
            FROM stats_daily_activity GROUP BY day, conversation_id
        ), usage AS (
            SELECT day, conversation_id, sum(calls) AS llm_calls, sum(input_tokens) AS input_tokens,
                   sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd
            FROM stats_llm_usage_daily GROUP BY day, conversation_id
        )
        SELECT day, conversation_id,
               coalesce(activity.messages, 0)::bigint AS messages,
               coalesce(activity.assistant_messages, 0)::bigint AS assistant_messages,
               coalesce(activity.active_users, 0)::bigint AS active_users,
               coalesce(usage.llm_calls, 0)::bigint AS llm_calls,
               coalesce(usage.input_tokens, 0)::bigint AS input_tokens,
               coalesce(usage.output_tokens, 0)::bigint AS output_tokens,
               coalesce(usage.cost_usd, 0)::numeric(18, 6) AS cost_usd
        FROM activity FULL JOIN usage USING (day, conversation_id)
    """,
    "stats_user_daily": f"""
        WITH activity AS (
            SELECT day, actor_id AS user_id, sum(messages) AS messages, count(*) AS conversations
            FROM stats_daily_activity WHERE actor_id <> {_NIL} GROUP BY day, actor_id
        ), usage AS (
            SELECT day, user_id, sum(calls) AS llm_calls, sum(input_tokens) AS input_tokens,
                   sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd
            FROM stats_llm_usage_daily WHERE user_id <> {_NIL} GROUP BY day, user_id
        )
        SELECT day, user_id,
               coalesce(activity.messages, 0)::bigint AS messages,
               coalesce(activity.conversations, 0)::bigint AS conversations,
               coalesce(usage.llm_calls, 0)::bigint AS llm_calls,
               coalesce(usage.input_tokens, 0)::bigint AS input_tokens,
               coalesce(usage.output_tokens, 0)::bigint AS output_tokens,
               coalesce(usage.cost_usd, 0)::numeric(18, 6) AS cost_usd
        FROM activity FULL JOIN usage USING (day, user_id)
    """,
    "stats_active_users_daily": f"""
        SELECT day, count(DISTINCT actor_id)::bigint AS active_users, sum(messages)::bigint AS messages
        FROM stats_daily_activity WHERE actor_id <> {_NIL} GROUP BY day
    """,
}


def _uuid(name: str, **kw: object) -> sa.Column[object]:
    return sa.Column(name, pg.UUID(as_uuid=True), **kw)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "read_conversation_list",
        _uuid("user_id", nullable=False),
        _uuid("conversation_id", nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_preview", sa.Text(), nullable=True),
        _uuid("last_sender_id", nullable=True),
        sa.Column("last_role", sa.Text(), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unread_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "conversation_id", name=op.f("pk_read_conversation_list")),
    )
    op.create_index(
        "ix_read_conversation_list_user_id_updated_at_conversation_id",
        "read_conversation_list",
        ["user_id", "updated_at", "conversation_id"],
    )
    op.create_index("ix_read_conversation_list_conversation_id", "read_conversation_list", ["conversation_id"])
    op.create_index(
        "ix_read_conversation_list_unread",
        "read_conversation_list",
        ["user_id"],
        postgresql_where=sa.text("unread_count > 0"),
    )
    op.create_table(
        "read_unread_totals",
        _uuid("user_id", nullable=False),
        sa.Column("total", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_read_unread_totals")),
    )
    op.create_table(
        "projection_state",
        _uuid("conversation_id", nullable=False),
        sa.Column("applied_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_projection_state")),
    )
    op.create_table(
        "stats_daily_activity",
        sa.Column("day", sa.Date(), nullable=False),
        _uuid("conversation_id", nullable=False),
        _uuid("actor_id", nullable=False),
        sa.Column("messages", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("day", "conversation_id", "actor_id", name=op.f("pk_stats_daily_activity")),
    )
    op.create_index("ix_stats_daily_activity_actor_id_day", "stats_daily_activity", ["actor_id", "day"])
    op.create_table(
        "stats_llm_usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        _uuid("conversation_id", nullable=False),
        _uuid("user_id", nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("calls", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost_usd", sa.Numeric(18, 6), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "conversation_id", "user_id", "provider", "model", name=op.f("pk_stats_llm_usage_daily")
        ),
    )
    op.create_table(
        "projected_usage_events",
        _uuid("event_id", nullable=False),
        sa.Column("projected_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_projected_usage_events")),
    )
    op.execute(_TOTALS_FUNCTION)
    for name, when in _TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION read_unread_totals_apply()")
    for name, body in _VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in _VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON read_conversation_list")
    op.execute("DROP FUNCTION IF EXISTS read_unread_totals_apply()")
    for table in (
        "projected_usage_events",
        "stats_llm_usage_daily",
        "stats_daily_activity",
        "projection_state",
        "read_unread_totals",
        "read_conversation_list",
    ):
        op.drop_table(table)
