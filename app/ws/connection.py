"""One client socket: a bounded outbound queue drained by a single writer task.

The writer is the only task that sends on the socket, so frames leave in the order they were
queued. For every joined conversation it keeps ``cursor``, the last seq this client has been sent;
a message at or below the cursor is a duplicate and is dropped, one above ``cursor + 1`` reveals a
gap (a trimmed stream, a Redis that lost data, a join replay still running) which the writer fills
from Postgres before sending it. That one rule gives each client seq 1, 2, 3 ... exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from litestar import WebSocket

from app.ws import frames, metrics
from app.ws.replies import FetchReply, ReplyCursors, ReplyLive, ReplyResume
from domain.values import Message

log = logging.getLogger("parley.ws")

#: Frames a client may have queued before we decide it cannot keep up and cut it off (it reconnects
#: and resyncs with after_seq). 1,000 frames of ~300 bytes bounds a socket to well under a megabyte.
MAX_QUEUED_FRAMES = 1000
#: Replay page size when filling gaps from Postgres.
REPLAY_PAGE = 500
#: Close code for a client that cannot keep up ("try again later").
CLOSE_TOO_SLOW = 1013

FetchAfter = Callable[[UUID, int, int], Awaitable[list[Message]]]


@dataclass(frozen=True, slots=True)
class Live:
    """A live message for a joined conversation, its frame encoded once for every socket."""

    conversation_id: UUID
    seq: int
    frame: str


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Send everything after the cursor that Postgres has (join with after_seq, resync)."""

    conversation_id: UUID


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Item = Live | CatchUp | Close | ReplyLive | ReplyResume | str


async def _no_reply(reply_id: UUID) -> list[Any]:
    return []


class Connection:
    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        user_id: UUID,
        fetch_after: FetchAfter,
        fetch_reply: FetchReply = _no_reply,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.socket = socket
        self.user_id = user_id
        self.cursors: dict[UUID, int] = {}
        #: Assistant replies this socket follows (app/ws/replies.py has the rule).
        self.replies = ReplyCursors(fetch_reply)
        self._fetch_after = fetch_after
        self._queue: asyncio.Queue[Item] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._closing = False
        self.sent_frames = 0

    def offer(self, item: Item) -> None:
        """Queue without waiting; a full queue means a slow client, which is disconnected."""
        if self._closing:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._closing = True
            log.info("socket %s of %s cannot keep up; closing", self.id, self.user_id)
            self._queue = asyncio.Queue()  # drop what it could not take; it resyncs on reconnect
            self._queue.put_nowait(Close(CLOSE_TOO_SLOW, "too slow: reconnect and join with after_seq"))

    def close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(Close(code, reason))

    async def run_writer(self) -> None:
        """Drain the queue until a Close item or a send failure. Never raises."""
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, Close):
                    metrics.CLOSES.labels(str(item.code)).inc()
                    await self.socket.close(code=item.code, reason=item.reason)
                    return
                if isinstance(item, str):
                    await self._send(item)
                elif isinstance(item, Live):
                    await self._deliver(item)
                elif isinstance(item, ReplyLive | ReplyResume):
                    await self.replies.handle(item, self._send)
                else:
                    await self._catch_up(item.conversation_id, upto=None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken socket ends this connection only, never the node
            log.debug("writer for socket %s stopped: %s", self.id, exc)

    async def _deliver(self, live: Live) -> None:
        cursor = self.cursors.get(live.conversation_id)
        if cursor is None or live.seq <= cursor:
            return  # not joined (any more), or already sent
        if live.seq > cursor + 1:
            await self._catch_up(live.conversation_id, upto=live.seq - 1)
            if self.cursors.get(live.conversation_id) != live.seq - 1:
                return  # left meanwhile, or the catch-up already covered this seq
        await self._send(live.frame)
        self.cursors[live.conversation_id] = live.seq

    async def _catch_up(self, conversation_id: UUID, *, upto: int | None) -> None:
        while (cursor := self.cursors.get(conversation_id)) is not None and (upto is None or cursor < upto):
            page = await self._fetch_after(conversation_id, cursor, REPLAY_PAGE)
            for message in page:
                if upto is not None and message.seq > upto:
                    return
                if conversation_id not in self.cursors:
                    return
                await self._send(frames.message_frame(message))
                self.cursors[conversation_id] = message.seq
            if len(page) < REPLAY_PAGE:
                return

    async def _send(self, data: str) -> None:
        await self.socket.send_data(data, mode="text")
        self.sent_frames += 1
        metrics.FRAMES_OUT.inc()
