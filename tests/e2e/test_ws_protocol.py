"""The WebSocket protocol's edges on a real node with the default limits: auth, bad frames, limits,
presence, typing and read receipts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import websockets

from infrastructure.embedded import EmbeddedRedis
from tests.e2e.checker import History
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import running_cluster


@pytest.fixture(scope="module")
def cluster(
    e2e_database_url: str, e2e_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Default limits (10 msg/s, burst 20; 10 sockets per user; 64 KiB frames)."""
    log_dir = tmp_path_factory.mktemp("e2e-protocol-logs")
    with running_cluster(
        e2e_database_url, e2e_redis, log_dir, PARLEY_ALLOWED_ORIGINS="https://app.example.com"
    ) as built:
        yield built


async def _count_messages(api: Api, user: dict[str, str], conv: str) -> int:
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        r = await http.get(
            f"/api/conversations/{conv}/messages",
            params={"limit": 200},
            headers={"Authorization": f"Bearer {user['token']}"},
        )
        return len(r.json()["items"])


@pytest.mark.parametrize(
    ("url_suffix", "headers"),
    [
        ("", {}),
        ("?ticket=not-a-ticket", {}),
        ("", {"Authorization": "Bearer not.a.jwt"}),
    ],
)
async def test_failed_authentication_closes_with_4401(
    cluster: Cluster, url_suffix: str, headers: dict[str, str]
) -> None:
    async with websockets.connect(cluster.nodes[0].ws_url + url_suffix, additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4401


async def test_a_ticket_works_once(cluster: Cluster, api: Api) -> None:
    user = await api.user()
    ticket = await api.ticket(user)
    async with websockets.connect(f"{cluster.nodes[0].ws_url}?ticket={ticket}") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    async with websockets.connect(f"{cluster.nodes[1].ws_url}?ticket={ticket}") as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4401


async def test_a_foreign_origin_is_refused_with_4403(cluster: Cluster, api: Api) -> None:
    user = await api.user()
    headers = {"Authorization": f"Bearer {user['token']}"}
    async with websockets.connect(
        cluster.nodes[0].ws_url, additional_headers=headers, origin="https://evil.example"
    ) as ws:  # type: ignore[arg-type]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4403
    async with websockets.connect(
        cluster.nodes[0].ws_url,
        additional_headers=headers,
        origin="https://app.example.com",  # type: ignore[arg-type]
    ) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"


async def test_bad_frames_get_error_frames_keep_the_socket_and_write_nothing(
    cluster: Cluster, api: Api, clients: list[ChatClient]
) -> None:
    alice, stranger = await api.user(), await api.user()
    conv = await api.conversation(alice)
    foreign_conv = await api.conversation(stranger)
    client = await ChatClient("alice", History()).connect(cluster.nodes[0].ws_url, alice["token"])
    clients.append(client)
    await client.join(conv)
    bad = [
        "not json",
        "[1, 2, 3]",
        json.dumps({"type": "dance"}),
        json.dumps({"type": "send", "conversation_id": conv}),
        json.dumps({"type": "send", "conversation_id": "nope", "client_msg_id": "x", "text": "hi"}),
        json.dumps({"type": "send", "conversation_id": conv, "client_msg_id": "x", "text": "   "}),
        json.dumps({"type": "send", "conversation_id": conv, "client_msg_id": "y", "text": "x" * 4001}),
        json.dumps({"type": "join", "conversation_id": foreign_conv}),
        json.dumps({"type": "send", "conversation_id": foreign_conv, "client_msg_id": "z", "text": "hi"}),
        json.dumps({"type": "join", "conversation_id": str(uuid.uuid4())}),
    ]
    codes = []
    for raw in bad:
        await client.ws.send(raw)  # type: ignore[union-attr]
        codes.append((await client.expect("error"))["code"])

    assert codes == ["VALIDATION"] * 6 + ["TOO_LARGE", "FORBIDDEN", "FORBIDDEN", "NOT_FOUND"]
    await client.send_json({"type": "ping"})
    await client.expect("pong")
    assert await _count_messages(api, alice, conv) == 0
    assert await _count_messages(api, stranger, foreign_conv) == 0


async def test_an_oversized_frame_closes_with_1009(cluster: Cluster, api: Api) -> None:
    user = await api.user()
    async with websockets.connect(
        cluster.nodes[0].ws_url, additional_headers={"Authorization": f"Bearer {user['token']}"}, max_size=None
    ) as ws:
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009


async def test_a_flood_past_the_rate_limit_is_refused_and_nothing_beyond_it_is_written(
    cluster: Cluster, api: Api, clients: list[ChatClient]
) -> None:
    alice = await api.user()
    conv = await api.conversation(alice)
    client = await ChatClient("alice", History()).connect(cluster.nodes[0].ws_url, alice["token"])
    clients.append(client)
    await client.join(conv)
    for i in range(60):
        await client.send_json(
            {"type": "send", "conversation_id": conv, "client_msg_id": f"f{i}", "text": f"flood {i}"}
        )
    outcomes = [await client.expect_any({"ack", "error"}) for _ in range(60)]

    accepted = [f for f in outcomes if f["type"] == "ack"]
    refused = [f for f in outcomes if f["type"] == "error"]
    assert refused and all(f["code"] == "RATE_LIMITED" for f in refused)
    assert 20 <= len(accepted) < 60
    assert await _count_messages(api, alice, conv) == len(accepted)


async def test_the_eleventh_socket_of_a_user_is_closed_with_1008(cluster: Cluster, api: Api) -> None:
    user = await api.user()
    headers = {"Authorization": f"Bearer {user['token']}"}
    sockets = [await websockets.connect(cluster.nodes[i % 2].ws_url, additional_headers=headers) for i in range(10)]
    try:
        for ws in sockets:  # each is registered once it answers
            await ws.send(json.dumps({"type": "ping"}))
            await asyncio.wait_for(ws.recv(), 5)
        async with websockets.connect(cluster.nodes[0].ws_url, additional_headers=headers) as extra:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(extra.recv(), 5)
            assert extra.close_code == 1008
    finally:
        for ws in sockets:
            await ws.close()


async def test_presence_typing_and_read_reach_the_other_member_across_nodes(
    cluster: Cluster, api: Api, clients: list[ChatClient]
) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    history = History()
    bob_client = await ChatClient("bob@2", history).connect(cluster.nodes[1].ws_url, bob["token"])
    clients.append(bob_client)
    await bob_client.join(conv)

    alice_client = await ChatClient("alice@1", history).connect(cluster.nodes[0].ws_url, alice["token"])
    clients.append(alice_client)
    presence = await bob_client.expect("presence")
    assert presence == {"type": "presence", "user_id": alice["id"], "status": "online"}

    await alice_client.join(conv)
    await alice_client.send_json({"type": "typing", "conversation_id": conv, "active": True})
    typing = await bob_client.expect("typing")
    assert typing == {"type": "typing", "conversation_id": conv, "user_id": alice["id"], "active": True}

    ack = await alice_client.send(conv, "hello bob")
    await bob_client.send_json({"type": "read", "conversation_id": conv, "seq": ack["seq"]})
    read = await alice_client.expect("read")
    assert read == {"type": "read", "conversation_id": conv, "user_id": bob["id"], "seq": ack["seq"]}

    await alice_client.close()
    offline = await bob_client.expect("presence")
    assert offline == {"type": "presence", "user_id": alice["id"], "status": "offline"}
