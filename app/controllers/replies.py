"""Assistant replies: ``POST /api/conversations/{id}/replies/{reply_id}/cancel`` (any member, any node).

The WS ``cancel`` and ``resume`` frames use the same check (``app/reply_access.py``): the reply's
conversation, recorded when the reply was queued, must be one the caller belongs to.
"""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, post
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK

from app.deps import AUTHENTICATED, ServicesDep, UserDep
from app.reply_access import reply_of
from app.schemas import ReplyCancelRead
from domain.errors import NotFound
from infrastructure.redis import replies


class ReplyController(Controller):
    path = "/api/conversations/{conversation_id:uuid}/replies"
    tags = ["assistant"]
    dependencies = AUTHENTICATED

    @post("/{reply_id:uuid}/cancel", status_code=HTTP_200_OK, operation_id="CancelReply")
    async def cancel_reply(
        self, conversation_id: FromPath[UUID], reply_id: FromPath[UUID], services: ServicesDep, user: UserDep
    ) -> ReplyCancelRead:
        """Stop an answer in progress; it ends with ``stream_end`` and ``cancelled: true``.
        ``cancelled`` is false when the answer had already ended."""
        found = await reply_of(services, reply_id, user.id)
        if found.conversation_id != conversation_id:
            raise NotFound("no such reply in this conversation")
        await replies.request_cancel(services.redis, reply_id)
        return ReplyCancelRead(reply_id=reply_id, cancelled=found.state != "ended")
