"""Crashes under load (kill -9, no goodbye): acked messages are never lost, no client sees a seq twice."""

from __future__ import annotations

import asyncio
import contextlib

from tests.e2e.checker import History, check
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster


async def _sender(client: ChatClient, conv: str, stop: asyncio.Event, pause: float = 0.005) -> int:
    """Send until told to stop; a send that fails (no ack) is simply not in the history."""
    sent = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await client.send(conv, f"load {sent}")
            sent += 1
        await asyncio.sleep(pause)
    return sent


async def test_relay_killed_mid_load_then_restarted_delivers_every_acked_message_once(
    cluster: Cluster, api: Api, history: History, clients: list[ChatClient]
) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    writer = await ChatClient("alice@1", history).connect(cluster.nodes[0].ws_url, alice["token"])
    readers = [
        await ChatClient("bob@1", history).connect(cluster.nodes[0].ws_url, bob["token"]),
        await ChatClient("bob@2", history).connect(cluster.nodes[1].ws_url, bob["token"]),
    ]
    clients += [writer, *readers]
    for client in [writer, *readers]:
        await client.join(conv)
    assert cluster.relay is not None

    stop = asyncio.Event()
    load = asyncio.create_task(_sender(writer, conv, stop))
    await asyncio.sleep(1.0)
    cluster.relay.kill()  # acks keep coming (the write path does not need the relay)
    await asyncio.sleep(1.0)
    cluster.relay.start()
    await asyncio.sleep(1.0)
    stop.set()
    sent = await load

    last = max(seq for _, seq in history.acked)
    await asyncio.gather(*(r.wait_for_seq(conv, last, timeout=30) for r in [writer, *readers]))
    verdict = check(history, [c.name for c in [writer, *readers]], conv)
    assert sent > 50 and verdict.ok, verdict
    assert all(c.seqs(conv) == list(range(1, last + 1)) for c in [writer, *readers])


async def test_api_node_killed_its_clients_reconnect_to_the_other_node_and_catch_up_exactly_once(
    cluster: Cluster, api: Api, history: History, clients: list[ChatClient]
) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    doomed, survivor = cluster.nodes
    writer = await ChatClient("alice@survivor", history).connect(survivor.ws_url, alice["token"])
    bob_on_doomed = await ChatClient("bob@doomed", history).connect(doomed.ws_url, bob["token"])
    clients += [writer, bob_on_doomed]
    await writer.join(conv)
    await bob_on_doomed.join(conv)

    stop = asyncio.Event()
    load = asyncio.create_task(_sender(writer, conv, stop))
    await asyncio.sleep(1.0)
    doomed.kill()
    code, _ = await asyncio.wait_for(bob_on_doomed.closed, 10)
    seen = bob_on_doomed.seqs(conv)
    last_seen = seen[-1] if seen else 0

    # Bob's client reconnects to the surviving node and resumes after the last seq it saw.
    bob_again = await ChatClient("bob@survivor", history).connect(survivor.ws_url, bob["token"])
    clients.append(bob_again)
    await bob_again.join(conv, after_seq=last_seen)
    await asyncio.sleep(1.0)
    stop.set()
    await load
    last = max(seq for _, seq in history.acked)
    await bob_again.wait_for_seq(conv, last, timeout=30)
    doomed.start()  # leave the cluster whole for the next test

    delivered = seen + bob_again.seqs(conv)
    assert code != 1000
    assert delivered == list(range(1, last + 1)), "bob missed or repeated a seq across the crash"
    assert check(history, [writer.name], conv).ok


async def test_node_killed_between_commit_and_publish_the_relay_publishes_and_a_retry_gets_the_original(
    cluster: Cluster, api: Api, history: History, clients: list[ChatClient]
) -> None:
    """The writing node publishes its own commits; one that dies right after a commit (failpoint
    ``after-commit``: SIGKILL before publish and ack) leaves the message to the relay's safety net."""
    alice, bob = await api.user(), await api.user()
    doomed, survivor = cluster.nodes
    conv = await Api(survivor.base_url).conversation(alice, bob)
    bob_reader = await ChatClient("bob@survivor", history).connect(survivor.ws_url, bob["token"])
    clients.append(bob_reader)
    await bob_reader.join(conv)
    before = await ChatClient("alice@survivor", history).connect(survivor.ws_url, alice["token"])
    clients.append(before)
    await before.join(conv)
    for n in range(3):
        await before.send(conv, f"before {n}")

    doomed.kill()
    doomed.env["PARLEY_FAILPOINTS"] = "after-commit"
    doomed.start()
    try:
        alice_doomed = await ChatClient("alice@doomed", history).connect(doomed.ws_url, alice["token"])
        clients.append(alice_doomed)
        await alice_doomed.join(conv)
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await alice_doomed.send(conv, "committed, never acked", client_msg_id="the-lost-ack")
        assert doomed.popen is not None
        assert doomed.popen.wait(10) == -9, "the failpoint did not kill the node"

        # The message is durable: the relay publishes it to the survivor's readers (no gap, no repeat),
        # and the client's retry with the same client_msg_id gets the original seq, not a new message.
        await bob_reader.wait_for_seq(conv, 4, timeout=15)
        retry = await before.send(conv, "committed, never acked", client_msg_id="the-lost-ack")
        assert retry["status"] == "duplicate" and retry["seq"] == 4
        await before.send(conv, "after")
        await bob_reader.wait_for_seq(conv, 5, timeout=15)
    finally:
        doomed.env.pop("PARLEY_FAILPOINTS")
        doomed.kill()
        doomed.start()  # leave the cluster whole for the next test

    assert bob_reader.seqs(conv) == [1, 2, 3, 4, 5]
    assert check(history, [bob_reader.name], conv).ok
