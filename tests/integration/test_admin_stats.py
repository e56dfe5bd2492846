"""GET /api/admin/stats: admins only; daily messages per conversation and user from the read models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.bootstrap import Services
from tests.integration.conftest import MakeConversation, MakeUser, Project, assert_error


async def test_admins_get_daily_messages_per_conversation_and_user_and_others_are_refused(
    client: AsyncTestClient[Any],
    services: Services,
    make_user: MakeUser,
    make_conversation: MakeConversation,
    project: Project,
) -> None:
    admin, alice, bob = await make_user(), await make_user(), await make_user()
    await services.auth.grant_admin(admin.email)
    conv = await make_conversation(alice, bob)
    for author, text in ((alice, "a"), (bob, "b"), (alice, "c")):
        await client.post(
            f"/api/conversations/{conv['id']}/messages",
            json={"client_msg_id": text, "text": text},
            headers=author.headers,
        )
    await project()
    today = datetime.now(UTC).date().isoformat()

    assert_error(await client.get("/api/admin/stats"), 401, "UNAUTHORIZED")
    assert_error(await client.get("/api/admin/stats", headers=alice.headers), 403, "FORBIDDEN")
    assert_error(
        await client.get("/api/admin/stats?from=2026-02-02&to=2026-02-01", headers=admin.headers), 400, "VALIDATION"
    )
    response = await client.get(f"/api/admin/stats?from={today}&to={today}", headers=admin.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["days"] == [{"day": today, "messages": 3, "active_users": 2}]
    [row] = body["conversations"]
    assert (row["conversation_id"], row["messages"], row["active_users"]) == (conv["id"], 3, 2)
    assert {u["user_id"]: u["messages"] for u in body["users"]} == {str(alice.id): 2, str(bob.id): 1}
    assert body["llm_usage"] == [] and body["truncated"] is False
