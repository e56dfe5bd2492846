"""Presence: a user is online while any of their sockets is open on a node that is alive.

Each user has a hash ``socket id -> node id``. Liveness is the node's, not the socket's: every node
already refreshes its own alive key (``keys.node_alive``, TTL 60 s), so keeping presence costs one
write per node per heartbeat however many sockets it holds, and the sockets of a node killed without
saying goodbye stop counting once its key expires. Entries of dead nodes are pruned lazily.

A socket's connect and close are one round trip to Redis, not two: the node remembers for
``ALIVE_KNOWN_SECONDS`` which nodes it found alive (and takes itself to be alive), where it asked the
alive keys whenever the user had another socket (in a reconnect storm, nearly every time). A dead
node's sockets then count at most that much longer than its key's TTL, which is already a minute.
Nodes found dead are asked again every time (their entries are pruned, and a wrong "dead" would prune
a live node's sockets), and ``online``, the snapshot a client asks for, always asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from redis.asyncio import Redis

from infrastructure.redis import keys

#: Bounds the garbage of a user who never connects again after their node died.
ENTRY_TTL_SECONDS = 24 * 3600
#: How long a node found alive is taken to be alive without asking Redis again.
ALIVE_KNOWN_SECONDS = 5.0


class Presence:
    def __init__(self, redis: Redis, node_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._node_id = node_id
        self._clock = clock
        #: node id -> when it was last found alive (``clock``).
        self._alive_at: dict[str, float] = {}

    async def connect(self, user_id: UUID, socket_id: str) -> int:
        """Record a socket; returns how many other live sockets the user has (0: just came online).

        The read and the write are one MULTI, so concurrent connects of one user each see the others:
        the sockets-per-user limit holds across nodes without a separate counter."""
        key = keys.presence(user_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.hset(key, socket_id, self._node_id)
        pipe.expire(key, ENTRY_TTL_SECONDS)
        before, *_ = await pipe.execute()
        before.pop(socket_id.encode(), None)
        return await self._live(key, before)

    async def disconnect(self, user_id: UUID, socket_id: str) -> bool:
        """Forget a socket; True when the user just went offline."""
        key = keys.presence(user_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(key, socket_id)
        pipe.hgetall(key)
        _, after = await pipe.execute()
        return await self._live(key, after) == 0

    async def _live(self, key: str, entries: dict[bytes, bytes]) -> int:
        """Count entries whose node is alive, pruning those of dead nodes."""
        if not entries:
            return 0
        alive = await self._alive({node.decode() for node in entries.values()})
        dead = [sid.decode() for sid, node in entries.items() if node.decode() not in alive]
        if dead:
            await self._redis.hdel(key, *dead)  # type: ignore[misc]
        return len(entries) - len(dead)

    async def online(self, user_ids: list[UUID]) -> set[UUID]:
        """Which of these users have a live socket now (a snapshot for a client that just arrived;
        changes after it come as ``presence`` frames)."""
        if not user_ids:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hgetall(keys.presence(user_id))
        entries: list[dict[bytes, bytes]] = await pipe.execute()
        nodes = {node.decode() for e in entries for node in e.values()}
        if not nodes:
            return set()
        alive = {n.encode() for n in await self._ask_alive(nodes)}
        return {u for u, e in zip(user_ids, entries, strict=True) if any(node in alive for node in e.values())}

    async def _alive(self, nodes: set[str]) -> set[str]:
        """Which of ``nodes`` are alive: this one, those found alive within ``ALIVE_KNOWN_SECONDS``, and
        the rest asked of Redis in one MGET (none when every one is known)."""
        now = self._clock()
        known = {
            n
            for n in nodes
            if n == self._node_id or ((seen := self._alive_at.get(n)) is not None and now - seen < ALIVE_KNOWN_SECONDS)
        }
        unknown = nodes - known
        if not unknown:
            return known
        found = await self._ask_alive(unknown)
        # Forget what is out of date (nodes come and go: the dict holds the ones seen lately only).
        self._alive_at = {n: seen for n, seen in self._alive_at.items() if now - seen < ALIVE_KNOWN_SECONDS}
        self._alive_at.update(dict.fromkeys(found, now))
        return known | found

    async def _ask_alive(self, nodes: set[str]) -> set[str]:
        """Which of ``nodes`` have their alive key now: one MGET."""
        ordered = sorted(nodes)
        flags = await self._redis.mget([keys.node_alive(n) for n in ordered])
        return {n for n, flag in zip(ordered, flags, strict=True) if flag is not None}
