"""A test-only trigger on the real ``messages`` table that records every write of a message's embedding,
so tests count "embedded exactly once" in the database itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from infrastructure.bootstrap import Services

AUDIT = [
    "CREATE TABLE IF NOT EXISTS embedding_writes (message_id uuid NOT NULL)",
    """CREATE OR REPLACE FUNCTION record_embedding_write() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO embedding_writes VALUES (NEW.id); RETURN NEW; END $$""",
    """CREATE OR REPLACE TRIGGER audit_embedding_writes AFTER UPDATE OF embedding ON messages
       FOR EACH ROW WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION record_embedding_write()""",
]


@pytest.fixture
async def audited(services: Services) -> AsyncIterator[None]:
    """Record every write of a message's embedding column (a test-only trigger on the real table)."""
    for statement in AUDIT:
        await services.pg.execute(statement)
    yield
    await services.pg.execute("DROP TRIGGER IF EXISTS audit_embedding_writes ON messages")
    await services.pg.execute("DROP TABLE IF EXISTS embedding_writes")


async def writes_per_message(services: Services) -> dict[uuid.UUID, int]:
    rows = await services.pg.fetch("SELECT message_id, count(*) AS n FROM embedding_writes GROUP BY message_id")
    return {r["message_id"]: r["n"] for r in rows}
