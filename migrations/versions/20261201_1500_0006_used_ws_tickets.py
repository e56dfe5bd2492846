"""Single-use WS tickets recorded in PostgreSQL (used_ws_tickets), so Redis losing data cannot reopen one.

Revision ID: 0006
Revises: 0001
Create Date: 2026-12-01 15:30:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "used_ws_tickets",
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_used_ws_tickets")),
    )


def downgrade() -> None:
    op.drop_table("used_ws_tickets")
