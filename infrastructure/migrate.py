"""Run Alembic migrations from code (CLI, `parley dev`, tests)."""

from __future__ import annotations

from alembic import command

from migrations import alembic_config


def upgrade_head(database_url: str) -> None:
    """Blocking; from async code call it in a thread (Alembic's env runs its own event loop)."""
    command.upgrade(alembic_config(database_url), "head")


def downgrade_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
