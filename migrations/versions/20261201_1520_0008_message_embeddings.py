"""Message embeddings: a ``vector(384)`` column on messages with an HNSW index (cosine), and a
partial index that finds the messages still waiting for one (backfill, worker catch-up).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:20:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 384 = all-MiniLM-L6-v2's dimension; providers are checked against it at start.
    op.add_column("messages", sa.Column("embedding", Vector(384), nullable=True))
    op.create_index(
        "ix_messages_embedding",
        "messages",
        ["embedding"],
        unique=False,
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_index(
        "ix_messages_unembedded",
        "messages",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("embedding IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_unembedded", table_name="messages")
    op.drop_index("ix_messages_embedding", table_name="messages")
    op.drop_column("messages", "embedding")
