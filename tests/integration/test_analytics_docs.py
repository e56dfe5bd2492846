"""Every SQL example in docs/analytics.md runs against the migrated schema (analysts paste them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infrastructure.bootstrap import Services

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
EXAMPLES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_analytics_page_has_examples_for_every_read_model() -> None:
    text = "\n".join(EXAMPLES)
    from infrastructure.db.tables import metadata

    read_models = [t for t in metadata.tables if t.startswith(("read_", "stats_", "projection_"))]
    views = ["stats_conversation_daily", "stats_user_daily", "stats_active_users_daily"]
    for name in read_models + views:
        assert name in text, name


@pytest.mark.parametrize("sql", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
async def test_an_analytics_example_runs(services: Services, sql: str) -> None:
    for statement in (s for s in sql.split(";") if s.strip()):
        await services.pg.fetch(statement)
