"""Flow 3 across real processes: every joined client on every node gets every message once, in order."""

from __future__ import annotations

import asyncio

from tests.e2e.checker import History, check
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster


async def connect(clients: list[ChatClient], history: History, name: str, url: str, token: str) -> ChatClient:
    client = await ChatClient(name, history).connect(url, token)
    clients.append(client)
    return client


async def test_clients_on_both_nodes_and_the_senders_other_device_get_every_message_once_in_order(
    cluster: Cluster, api: Api, history: History, clients: list[ChatClient]
) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    node1, node2 = cluster.nodes
    sender = await connect(clients, history, "alice-phone@1", node1.ws_url, alice["token"])
    other_device = await connect(clients, history, "alice-laptop@2", node2.ws_url, alice["token"])
    bob1 = await connect(clients, history, "bob@1", node1.ws_url, bob["token"])
    bob2 = await connect(clients, history, "bob-tablet@2", node2.ws_url, bob["token"])
    everyone = [sender, other_device, bob1, bob2]
    for client in everyone:
        await client.join(conv)

    for i in range(60):
        await sender.send(conv, f"message {i}")
    await asyncio.gather(*(c.wait_for_seq(conv, 60) for c in everyone))

    verdict = check(history, [c.name for c in everyone], conv)
    assert verdict.ok, verdict
    assert all(c.seqs(conv) == list(range(1, 61)) for c in everyone)


async def test_concurrent_senders_on_two_nodes_interleave_without_gaps(
    cluster: Cluster, api: Api, history: History, clients: list[ChatClient]
) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    a = await connect(clients, history, "alice@1", cluster.nodes[0].ws_url, alice["token"])
    b = await connect(clients, history, "bob@2", cluster.nodes[1].ws_url, bob["token"])
    await a.join(conv)
    await b.join(conv)

    async def burst(client: ChatClient, n: int) -> None:
        for i in range(n):
            await client.send(conv, f"{client.name} {i}")

    await asyncio.gather(burst(a, 40), burst(b, 40))
    await asyncio.gather(a.wait_for_seq(conv, 80), b.wait_for_seq(conv, 80))

    assert check(history, [a.name, b.name], conv).ok
    assert a.seqs(conv) == b.seqs(conv) == list(range(1, 81))


async def test_a_client_that_missed_200_messages_rejoins_with_after_seq_while_others_keep_sending(
    cluster: Cluster, api: Api, history: History, clients: list[ChatClient]
) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    writer = await connect(clients, history, "alice@1", cluster.nodes[0].ws_url, alice["token"])
    await writer.join(conv)
    for i in range(5):
        await writer.send(conv, f"before {i}")
    # bob saw up to seq 5, went away, and 200 more were written meanwhile.
    for i in range(200):
        await writer.send(conv, f"missed {i}")

    bob_again = await connect(clients, history, "bob-again@2", cluster.nodes[1].ws_url, bob["token"])
    keep_sending = asyncio.create_task(_send_many(writer, conv, 50))
    joined = await bob_again.join(conv, after_seq=5)
    await keep_sending
    await bob_again.wait_for_seq(conv, 255)

    assert joined["last_seq"] >= 205
    assert bob_again.seqs(conv) == list(range(6, 256))
    assert check(history, [bob_again.name], conv, from_seq=6).ok


async def _send_many(client: ChatClient, conv: str, n: int) -> None:
    for i in range(n):
        await client.send(conv, f"during replay {i}")
