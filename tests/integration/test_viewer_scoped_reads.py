"""Reads that serve a user carry the viewer's membership in their SQL: a removed member's replay
(join with after_seq, gap fill, resync) and participant list bring nothing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar.testing import AsyncTestClient

from infrastructure.bootstrap import Services
from infrastructure.db import views
from tests.integration.conftest import MakeConversation, MakeUser


async def test_a_removed_member_gets_nothing_committed_after_removal(
    client: AsyncTestClient[Any], services: Services, make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    owner, member = await make_user(), await make_user()
    cid = UUID((await make_conversation(owner, member))["id"])
    url = f"/api/conversations/{cid}"
    await client.post(f"{url}/messages", json={"client_msg_id": "a", "text": "before"}, headers=owner.headers)
    assert [m.seq for m in await views.messages_after(services.engine, cid, member.id, 0, 100)] == [1]

    removed = await client.delete(f"{url}/participants/{member.id}", headers=owner.headers)
    assert removed.status_code == 204
    await client.post(f"{url}/messages", json={"client_msg_id": "b", "text": "after"}, headers=owner.headers)

    assert await views.messages_after(services.engine, cid, member.id, 0, 100) == []
    assert await views.participants_of(services.engine, cid, member.id) == []
    page = await views.message_page(services.engine, cid, member.id, after_seq=None, before_seq=None, limit=10)
    assert page.items == []
    assert [m.seq for m in await views.messages_after(services.engine, cid, owner.id, 0, 100)] == [1, 2]
