"""Who may touch an assistant reply: a member of the conversation the reply was queued in.

One check for both doors: ``POST …/replies/{reply_id}/cancel`` (``app/controllers/replies.py``) and the
WebSocket ``cancel`` and ``resume`` frames (``app/ws/gateway.py``). The reply's conversation comes from
its record in Redis (written when the reply was queued), the membership from PostgreSQL, read for this
caller; a reply whose record has expired is not found.
"""

from __future__ import annotations

from uuid import UUID

from domain.errors import NotAParticipant, NotFound
from infrastructure.bootstrap import Services
from infrastructure.db import views
from infrastructure.redis import replies
from infrastructure.redis.replies import ReplyMeta


async def reply_of(services: Services, reply_id: UUID, user_id: UUID) -> ReplyMeta:
    """The reply, if it exists (still in Redis) and the caller is a member of its conversation."""
    found = await replies.meta(services.redis, reply_id)
    if found is None:
        raise NotFound("no such reply (or it ended too long ago)")
    membership = await views.membership(services.pg, found.conversation_id, user_id)
    if membership.role is None:
        raise NotAParticipant()
    return found
