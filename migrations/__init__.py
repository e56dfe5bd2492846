"""Alembic environment and versions: the only way Parley's schema changes (``parley migrate``)."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """An Alembic config for this package's migrations, independent of the working directory."""
    config = Config(str(HERE / "alembic.ini"))
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped with this code (what `/health/ready` expects the database at)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(HERE)).get_current_head()
