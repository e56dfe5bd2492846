"""`parley projections rebuild`: recompute every read model from the write tables, while the system runs.

Each conversation is recomputed exactly as the projector does after a gap (``read_models.recompute``
with ``full=True``, in its own short transaction under the conversation's projection-state lock), so the
result is the state the projector maintains, and a projector running meanwhile simply skips what the
rebuild already applied. Read-model rows of conversations that no longer exist are removed; unread totals
are recounted last. LLM usage statistics come only from events (the write tables do not hold them) and
are kept as they are.

Progress goes to the terminal as a bar, or as a log line every few seconds when output is not a terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO
from uuid import UUID

from infrastructure.bootstrap import Services
from infrastructure.db import read_model_upkeep, read_models
from infrastructure.redis import list_changes

log = logging.getLogger("parley.projections")

#: Conversations fetched per page of the walk.
PAGE = 500
#: Seconds between progress log lines when stdout is not a terminal.
LOG_EVERY_SECONDS = 5.0

Progress = Callable[[int, int], None]


def progress_printer(out: TextIO | None = None) -> Progress:
    """A bar on a terminal, periodic log lines otherwise."""
    out = out or sys.stderr
    tty = out.isatty()
    last = [0.0]

    def report(done: int, total: int) -> None:
        if tty:
            width = 40
            filled = width * done // max(total, 1)
            bar = "#" * filled + "-" * (width - filled)
            out.write(f"\rrebuilding [{bar}] {done}/{total} conversations")
            if done >= total:
                out.write("\n")
            out.flush()
        elif done >= total or time.monotonic() - last[0] >= LOG_EVERY_SECONDS:
            last[0] = time.monotonic()
            log.info("rebuild: %d/%d conversations", done, total)

    return report


async def _conversation_ids(services: Services) -> list[UUID]:
    """Every conversation that exists or is still projected (a deleted one's rows are removed)."""
    rows = await services.pg.fetch(
        """SELECT id FROM conversations
           UNION SELECT conversation_id FROM projection_state
           UNION SELECT DISTINCT conversation_id FROM read_conversation_list
           ORDER BY 1"""
    )
    return [r[0] for r in rows]


async def rebuild(services: Services, progress: Progress | None = None) -> int:
    """Recompute every conversation's read models; returns how many conversations were walked."""
    ids = await _conversation_ids(services)
    started = time.monotonic()
    for done, cid in enumerate(ids, start=1):
        async with services.pg.acquire() as conn, conn.transaction():
            changes = await read_models.recompute(conn, cid, full=True)
        await list_changes.publish(services.redis, changes)
        if progress is not None and (done % 50 == 0 or done == len(ids)):
            progress(done, len(ids))
    async with services.pg.acquire() as conn, conn.transaction():
        await read_model_upkeep.recount_totals(conn)
    if progress is not None and not ids:
        progress(0, 0)
    log.info("rebuilt the read models of %d conversations in %.1fs", len(ids), time.monotonic() - started)
    return len(ids)
