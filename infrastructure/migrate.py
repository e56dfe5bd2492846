"""Run Alembic migrations from code (CLI, `parley dev`, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from migrations import alembic_config


def _config(database_url: str) -> Config:
    config = alembic_config(database_url)
    # Our processes log in one format (infrastructure/logs.py): alembic.ini's logging is for its own CLI.
    config.attributes["configure_logging"] = False
    return config


def upgrade_head(database_url: str) -> None:
    """Blocking; from async code call it in a thread (Alembic's env runs its own event loop)."""
    command.upgrade(_config(database_url), "head")


def downgrade_base(database_url: str) -> None:
    command.downgrade(_config(database_url), "base")
