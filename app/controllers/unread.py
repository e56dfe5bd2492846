"""Unread counts across the caller's conversations, from the read model: /api/unread."""

from __future__ import annotations

from litestar import Controller, get

from app.deps import AUTHENTICATED, ServicesDep, UserDep
from app.schemas import UnreadRead
from infrastructure.db import views


class UnreadController(Controller):
    path = "/api/unread"
    tags = ["conversations"]
    dependencies = AUTHENTICATED

    @get("/", operation_id="GetUnread")
    async def unread(self, services: ServicesDep, user: UserDep) -> UnreadRead:
        counts = await views.unread_counts(services.pg, user.id)
        return UnreadRead(total=sum(counts.values()), conversations={str(k): v for k, v in counts.items()})
