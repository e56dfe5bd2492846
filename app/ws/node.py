"""The API node's background work, started in the app lifespan: the outbox publisher (what this node
commits goes to the streams at once), event and signal fan-out, presence heartbeats and announcements,
the lag safety net, and the janitor for consumer groups of dead nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from uuid import UUID

import sqlalchemy as sa
from redis.asyncio import Redis

from app.ws.fanout import EventFanout, ListChangeFanout, SignalFanout
from app.ws.hub import Hub
from app.ws.presence_announcer import PresenceAnnouncer
from app.ws.replies import ReplyFanout
from app.ws.sessions import SessionGuard
from infrastructure import stream_metrics
from infrastructure.bootstrap import Services
from infrastructure.db.tables import conversations
from infrastructure.redis import groups, streams
from infrastructure.redis.presence import Presence
from infrastructure.streams_report import build_report

log = logging.getLogger("parley.ws.node")

#: Maintenance tick: the node's alive key (which also keeps its users' presence) is refreshed this often,
#: well inside its TTL. Jittered so that nodes started together do not hit Redis and Postgres in step.
TICK_SECONDS = groups.NODE_HEARTBEAT_SECONDS
#: The janitor runs every this many ticks.
JANITOR_EVERY_TICKS = 6
#: On shutdown, presence announcements still queued (the sockets just closed) get this long to go out.
PRESENCE_FLUSH_SECONDS = 2.0


async def _run_id(redis: Redis) -> str:
    return str((await redis.info("server")).get("run_id", ""))


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Node:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.node_id = services.settings.server.node_id or default_node_id()
        self.hub = Hub()
        self.presence = Presence(services.redis, self.node_id)
        self.announcer = PresenceAnnouncer(services.pg, services.redis, self.presence)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._epoch: str | None = None
        #: Redis' run_id: it changes on every Redis restart, also one that reloads an older snapshot
        #: (which brings the old epoch back, so the epoch alone does not notice a rewind).
        self._redis_run_id: str | None = None
        self._fanout: EventFanout | None = None
        #: Conversations whose Postgres last_seq was ahead of the stream at the last tick -> the seq the
        #: stream had brought then.
        self._behind: dict[UUID, int] = {}

    async def start(self) -> None:
        redis = self.services.redis
        await groups.mark_node_alive(redis, self.node_id)  # before the groups exist: the janitor spares us
        self._epoch = await streams.ensure_epoch(redis)
        self._redis_run_id = await _run_id(redis)
        self._fanout = fanout = EventFanout(
            redis, self.hub, node_id=self.node_id, shard_count=self.services.settings.redis.shard_count
        )
        await fanout.setup()
        await self._sample_metrics()
        signals = SignalFanout(redis, self.hub)
        list_changes = ListChangeFanout(redis, self.hub)
        reply_fanout = ReplyFanout(redis, self.hub.on_reply)
        self._tasks = []
        if self.services.settings.server.publish_on_commit:
            self.services.start_publisher()
        self._tasks += [
            asyncio.create_task(self._guard(lambda: list_changes.run(self._stop), "list-change fan-out")),
            asyncio.create_task(self._guard(lambda: fanout.run(self._stop), "event fan-out")),
            asyncio.create_task(self._guard(lambda: signals.run(self._stop), "signal fan-out")),
            asyncio.create_task(self._guard(lambda: reply_fanout.run(self._stop), "reply fan-out")),
            asyncio.create_task(self._guard(self._maintain, "maintenance")),
            asyncio.create_task(self._guard(self.announcer.run, "presence announcer")),
            asyncio.create_task(
                self._guard(lambda: SessionGuard(self.hub, self.services.auth.sessions).run(self._stop), "sessions")
            ),
        ]
        log.info("WS node %s started", self.node_id)

    async def stop(self) -> None:
        if self._tasks:
            try:
                async with asyncio.timeout(PRESENCE_FLUSH_SECONDS):
                    await self.announcer.flush()
            except TimeoutError:
                log.warning("shutting down with %d presence announcements not published", self.announcer.queued)
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            if self._fanout is not None:
                await self._fanout.teardown()
            await groups.mark_node_gone(self.services.redis, self.node_id)

    async def _guard(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        """Keep a background loop alive: log an unexpected error and start the loop again."""
        while not self._stop.is_set():
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in 1s", name)
                await asyncio.sleep(1)

    async def _maintain(self) -> None:
        tick = 0
        while not self._stop.is_set():
            await asyncio.sleep(TICK_SECONDS * random.uniform(0.8, 1.0))
            tick += 1
            try:
                await self._tick(tick)
            except Exception as exc:  # one failed tick must not end maintenance
                log.warning("maintenance tick failed: %s", exc)

    async def _tick(self, tick: int) -> None:
        redis = self.services.redis
        await groups.mark_node_alive(redis, self.node_id)
        epoch = await streams.ensure_epoch(redis)
        run_id = await _run_id(redis)
        if epoch != self._epoch:
            log.warning("Redis epoch changed (%s -> %s): Redis lost data; resyncing local sockets", self._epoch, epoch)
            self.hub.resync_all()
        elif self._redis_run_id is not None and run_id != self._redis_run_id:
            log.warning("Redis restarted (run_id changed): it may have lost or rewound data; resyncing local sockets")
            self.hub.resync_all()
        self._epoch, self._redis_run_id = epoch, run_id
        await self._check_lag()
        await self._sample_metrics()
        if tick % JANITOR_EVERY_TICKS == 0:
            await groups.remove_dead_node_groups(redis, self.services.settings.redis.shard_count)

    async def _sample_metrics(self) -> None:
        """Stream, group, outbox and projector gauges for this node's /metrics (every node reports the
        shared state, so any node's scrape shows it)."""
        try:
            stream_metrics.observe(await build_report(self.services))
        except Exception as exc:  # metrics must never stop the node
            log.warning("stream metrics not sampled: %s", exc)

    async def _check_lag(self) -> None:
        """Safety net for lost stream tails: a conversation whose Postgres seq stayed ahead of the stream
        for a whole tick, with nothing arriving for it meanwhile, has its local subscribers caught up."""
        joined = self.hub.joined_conversations()
        if not joined:
            self._behind.clear()
            return
        async with self.services.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(conversations.c.id, conversations.c.last_seq).where(conversations.c.id.in_(joined))
                )
            ).all()
        behind: dict[UUID, int] = {}
        for conversation_id, last_seq in rows:
            seen = self.hub.seen_seq.get(conversation_id, 0)
            if last_seq <= seen:
                continue
            if self._behind.get(conversation_id) == seen:
                # Behind at the last tick too, and the stream brought nothing for it since: its tail was
                # lost (a stream that is merely backlogged keeps advancing and is left alone).
                log.info("conversation %s: stream stalled behind Postgres; resyncing", conversation_id)
                self.hub.seen_seq[conversation_id] = last_seq
                self.hub.resync(conversation_id)
            else:
                behind[conversation_id] = seen
        self._behind = behind
