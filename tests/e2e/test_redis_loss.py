"""Redis is not the record: when it loses everything (no persistence, failover to an empty replica),
nodes notice, recreate their consumer groups and catch clients up from Postgres by seq."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from infrastructure.embedded import EmbeddedRedis
from tests.e2e.checker import History, check
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster


async def test_after_redis_loses_all_data_clients_still_get_every_acked_message_once(
    cluster: Cluster, api: Api, e2e_redis: EmbeddedRedis, history: History, clients: list[ChatClient]
) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    writer = await ChatClient("alice@1", history).connect(cluster.nodes[0].ws_url, alice["token"])
    reader = await ChatClient("bob@2", history).connect(cluster.nodes[1].ws_url, bob["token"])
    clients += [writer, reader]
    await writer.join(conv)
    await reader.join(conv)
    for i in range(20):
        await writer.send(conv, f"before {i}")

    redis = Redis.from_url(e2e_redis.url)
    await redis.flushall()  # streams, groups, epoch: all gone
    await redis.aclose()
    for i in range(20):
        await writer.send(conv, f"after {i}")
        await asyncio.sleep(0.02)

    await asyncio.gather(writer.wait_for_seq(conv, 40, timeout=40), reader.wait_for_seq(conv, 40, timeout=40))
    assert check(history, [writer.name, reader.name], conv).ok
    assert reader.seqs(conv) == list(range(1, 41))
