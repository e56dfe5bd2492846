"""The read-cursor fast path: right after ``PUT .../read`` (or a WS ``read``) commits, the reader's row of
the conversation list is recomputed, so the response and the next ``GET`` agree without waiting for the
projector (which later applies the same ``ReadCursorMoved`` event idempotently), and the change goes to
the reader's other sockets as a ``conversation`` frame."""

from __future__ import annotations

import logging
from uuid import UUID

from redis.exceptions import RedisError

from infrastructure.bootstrap import Services
from infrastructure.db import read_models
from infrastructure.redis import list_changes

log = logging.getLogger("parley.read_cursor")


async def apply_read_cursor(services: Services, conversation_id: UUID, user_id: UUID) -> int:
    """Recompute the reader's row; returns their unread count in the conversation."""
    async with services.pg.acquire() as conn, conn.transaction():
        changes = await read_models.refresh_reader(conn, conversation_id, user_id)
        unread = await read_models.unread_of(conn, conversation_id, user_id)
    try:
        await list_changes.publish(services.redis, changes)
    except (RedisError, OSError) as exc:  # the badge on other devices catches up with the next change
        log.warning("list change not published: %s", exc)
    return unread
