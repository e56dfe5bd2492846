"""The assistant: per-conversation provider and temperature, one answer per reply, usage of every call.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 15:30:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"  # the lead re-chains at merge; 0001 in the brief, 0008 once issue-8 is merged
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("assistant_provider", sa.Text(), nullable=True))
    op.add_column("conversations", sa.Column("assistant_temperature", sa.Float(), nullable=True))
    op.create_index(
        "uq_messages_assistant_reply",
        "messages",
        ["conversation_id", "client_msg_id"],
        unique=True,
        postgresql_where=sa.text("sender_id IS NULL AND client_msg_id IS NOT NULL"),
    )
    op.create_table(
        "assistant_usage",
        sa.Column("reply_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("conversation_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost_usd", sa.Numeric(14, 6), server_default="0", nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('done', 'cancelled', 'error')", name=op.f("ck_assistant_usage_status")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_assistant_usage_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_assistant_usage_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("reply_id", "attempt", name=op.f("pk_assistant_usage")),
    )
    op.create_index("ix_assistant_usage_user_id_created_at", "assistant_usage", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_assistant_usage_user_id_created_at", table_name="assistant_usage")
    op.drop_table("assistant_usage")
    op.drop_index("uq_messages_assistant_reply", table_name="messages")
    op.drop_column("conversations", "assistant_temperature")
    op.drop_column("conversations", "assistant_provider")
