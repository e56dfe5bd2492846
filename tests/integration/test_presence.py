"""Presence follows the sockets of live nodes: a node that dies without goodbye stops counting."""

from __future__ import annotations

import uuid

from infrastructure.bootstrap import Services
from infrastructure.redis import groups, keys, presence
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


async def test_a_node_found_alive_is_not_asked_again_for_a_few_seconds(services: Services) -> None:
    """A connect or close is one round trip: the peers' alive keys are asked only when not known."""
    now = [1000.0]
    user = uuid.uuid4()
    await groups.mark_node_alive(services.redis, "n1")
    await groups.mark_node_alive(services.redis, "n2")
    n1, n2 = Presence(services.redis, "n1", clock=lambda: now[0]), Presence(services.redis, "n2")
    await n2.connect(user, "on-n2")

    async def alive_key_reads() -> int:
        stats = await services.redis.info("commandstats")
        return int(stats.get("cmdstat_mget", {}).get("calls", 0))

    assert await n1.connect(user, "s1") == 1  # asks whether n2 is alive
    asked = await alive_key_reads()
    assert await n1.connect(user, "s2") == 2
    assert await n1.disconnect(user, "s2") is False
    assert await alive_key_reads() == asked  # n2 known alive: one round trip each

    await services.redis.delete(keys.node_alive("n2"))  # n2 dies
    assert await n1.connect(user, "s3") == 2  # s1 and on-n2: n2 still known alive, within the window
    now[0] += presence.ALIVE_KNOWN_SECONDS
    assert await n1.connect(user, "s4") == 2  # s1 and s3: n2 asked again, its socket pruned
    assert b"on-n2" not in set(await services.redis.hkeys(keys.presence(user)))


async def test_a_node_found_dead_is_asked_again_every_time(services: Services) -> None:
    """Only "alive" is remembered: a node back under the same id counts at once (a remembered "dead"
    would prune its live sockets)."""
    user = uuid.uuid4()
    await groups.mark_node_alive(services.redis, "n1")
    n1 = Presence(services.redis, "n1")
    await services.redis.hset(keys.presence(user), "on-n3", "n3")  # type: ignore[misc]
    assert await n1.connect(user, "s1") == 0  # n3 is dead: its entry is pruned
    await groups.mark_node_alive(services.redis, "n3")
    await Presence(services.redis, "n3").connect(user, "back-on-n3")
    assert await n1.connect(user, "s2") == 2
