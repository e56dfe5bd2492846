"""Presence follows the sockets of live nodes: a node that dies without goodbye stops counting."""

from __future__ import annotations

import uuid

from infrastructure.bootstrap import Services
from infrastructure.redis import groups, keys
from infrastructure.redis.presence import Presence


async def test_a_user_is_online_while_any_socket_on_a_live_node_is_open(services: Services) -> None:
    user = uuid.uuid4()
    await groups.mark_node_alive(services.redis, "n1")
    await groups.mark_node_alive(services.redis, "n2")
    n1, n2 = Presence(services.redis, "n1"), Presence(services.redis, "n2")

    assert await n1.connect(user, "s1") == 0  # came online
    assert await n2.connect(user, "s2") == 1
    assert await n1.disconnect(user, "s1") is False  # still on n2
    assert await n2.disconnect(user, "s2") is True  # gone


async def test_sockets_of_a_dead_node_stop_counting_and_are_pruned(services: Services) -> None:
    user = uuid.uuid4()
    await groups.mark_node_alive(services.redis, "alive")
    crashed, alive = Presence(services.redis, "crashed"), Presence(services.redis, "alive")
    await groups.mark_node_alive(services.redis, "crashed")
    await crashed.connect(user, "old-1")
    await crashed.connect(user, "old-2")

    await services.redis.delete(keys.node_alive("crashed"))  # its alive key expired

    assert await alive.connect(user, "new") == 0
    assert set(await services.redis.hkeys(keys.presence(user))) == {b"new"}
