"""One client socket: a bounded outbound queue drained by a single writer task.

The writer is the only task that sends on the socket, so frames leave in the order they were
queued. It exists only while there is something to send: ``offer`` starts it, and it ends once the
queue has stayed empty for ``linger.LINGER_SECONDS``, so a busy socket keeps one writer and an idle
socket holds no writer task and no waiting future (at 10,000 idle sockets per node that is most of
them; see "WebSocket connections" in docs/operations.md). Frames go out through the server's own
``send`` (``app/ws/direct_send.py``), not through the app's send wrappers.

For every joined conversation it keeps ``cursor``, the last seq this client has been sent; a message
at or below the cursor is a duplicate and is dropped, one above ``cursor + 1`` reveals a
gap (a trimmed stream, a Redis that lost data, a join replay still running) which the writer fills
from Postgres before sending it. That one rule gives each client seq 1, 2, 3 ... exactly once.

A client that cannot keep up is cut off (1013) rather than allowed to grow the node's memory: when
its queue passes ``MAX_QUEUED_FRAMES`` or ``max_queued_bytes``, or when one write cannot be handed to
the transport within ``write_timeout`` (the client stopped reading and the transport's buffer is full).
The queue is dropped at once; the close frame is given ``CLOSE_TIMEOUT`` to get out, then the handler
returns anyway. Ending a session (4401: token expired, revoked, account deleted) drops the queue the
same way, so nothing queued is delivered after the decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from litestar import WebSocket

from app.ws import frames, metrics
from app.ws.direct_send import SendText
from app.ws.linger import LINGER_SECONDS, Linger
from app.ws.replies import FetchReply, ReplyCursors, ReplyLive, ReplyResume
from domain.values import Message
from infrastructure.auth.jwt_codec import AccessClaims

log = logging.getLogger("parley.ws")

#: Frames a client may have queued before we decide it cannot keep up and cut it off (it reconnects
#: and resyncs with after_seq). 1,000 frames of ~300 bytes bounds a socket to well under a megabyte.
MAX_QUEUED_FRAMES = 1000
#: Replay page size when filling gaps from Postgres.
REPLAY_PAGE = 500
#: Close code for a client that cannot keep up ("try again later").
CLOSE_TOO_SLOW = 1013
#: Close code for a session that ended (token expired or revoked, account deleted).
CLOSE_SESSION_ENDED = 4401
#: Defaults of the per-socket bounds (``Limits.ws_max_queued_bytes`` / ``ws_write_timeout_seconds``).
MAX_QUEUED_BYTES = 1024 * 1024
WRITE_TIMEOUT = 5.0
#: Once cut off, how long the close frame may take to get out before the handler returns anyway.
CLOSE_TIMEOUT = 5.0


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


def _size(item: Item) -> int:
    if isinstance(item, str):
        return len(item)
    return len(item.frame) if isinstance(item, Live) else 0


class Connection:
    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        session: AccessClaims,
        fetch_after: FetchAfter,
        fetch_reply: FetchReply = _no_reply,
        *,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        write_timeout: float = WRITE_TIMEOUT,
        send_text: SendText | None = None,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.socket = socket
        #: Sends one text frame (``direct_send.sender``); without one, through the socket's wrappers.
        self._send_text = send_text or self._send_wrapped
        #: The access token this socket lives on; ``refresh`` replaces it, its expiry ends the socket.
        self.session = session
        self.user_id = session.user_id
        self.cursors: dict[UUID, int] = {}
        #: Assistant replies this socket follows (app/ws/replies.py has the rule).
        self.replies = ReplyCursors(fetch_reply)
        self._fetch_after = fetch_after
        #: Frames waiting for the writer; None while there are none and no writer (an empty deque
        #: holds a 64-slot block, ~0.7 KiB per idle socket).
        self._queue: deque[Item] | None = None
        self._queued_bytes = 0
        self._max_queued_bytes = max_queued_bytes
        self._write_timeout = write_timeout
        self._closing = False
        #: The writer task while there is something to send (or was, within the linger), else None.
        self._writer: asyncio.Task[None] | None = None
        self._linger = Linger(linger_seconds)
        #: Loop time the write in progress began (None between writes), and the deadline's watchdog.
        self._send_started: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._stalled = False
        #: Set once the writer has closed the socket or given up on it (created on first ``finished()``).
        self._finished: asyncio.Future[None] | None = None
        self._ended = False
        self.sent_frames = 0

    @property
    def closing(self) -> bool:
        return self._closing

    def finished(self) -> asyncio.Future[None]:
        """Done once the writer has closed the socket (Close item) or a send failed: the socket is over."""
        if self._finished is None:
            self._finished = asyncio.get_running_loop().create_future()
            if self._ended:
                self._finished.set_result(None)
        return self._finished

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The writer task, while something is being sent or was within the linger."""
        return self._writer

    @property
    def ended(self) -> bool:
        """The writer closed the socket or gave up on it."""
        return self._ended

    async def stop(self) -> None:
        """The socket is gone: nothing more is queued or sent; a running writer is cancelled."""
        self._closing = self._ended = True
        self._queue = None
        writer, self._writer = self._writer, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def offer(self, item: Item) -> None:
        """Queue without waiting; a full queue means a slow client, which is disconnected."""
        if self._closing:
            return
        size = _size(item)
        queue = self._queue
        full = queue is not None and len(queue) >= MAX_QUEUED_FRAMES
        if full or self._queued_bytes + size > self._max_queued_bytes:
            self._cut_off()
            return
        if queue is None:
            self._queue = queue = deque()
        queue.append(item)
        self._queued_bytes += size
        self._wake()

    def _wake(self) -> None:
        if self._writer is not None:
            self._linger.poke()
        elif not self._ended:
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())

    def _cut_off(self) -> None:
        if self._closing:
            return
        log.info("socket %s of %s cannot keep up; closing", self.id, self.user_id)
        metrics.SLOW_CLIENTS.inc()
        self.end(CLOSE_TOO_SLOW, "too slow: reconnect and join with after_seq")

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued."""
        if not self._closing:
            self._closing = True
            if self._queue is None:
                self._queue = deque()
            self._queue.append(Close(code, reason))
            self._wake()

    def end(self, code: int, reason: str) -> None:
        """Close now: what is queued is dropped (the client resyncs with after_seq if it comes back)."""
        self._closing = True
        self._queue = deque((Close(code, reason),))
        self._queued_bytes = 0
        self._wake()

    def session_expired(self, now: float | None = None) -> bool:
        return self.session.expires_at.timestamp() <= (time.time() if now is None else now)

    async def _write_queued(self) -> None:
        """Send what is queued, then end once nothing more came within the linger (the next ``offer``
        starts a new writer); after a Close item or a send failure the socket is over (``finished``).
        Never raises."""
        try:
            while True:
                await self._write_all()
                if self._ended:
                    return  # closed (a Close item)
                await self._linger.wait()
                if not self._queue:
                    break
            self._writer = self._queue = None  # nothing more came: an idle socket keeps no writer, no queue
        except asyncio.CancelledError:
            if not self._stalled:
                raise
            # Our own watchdog's cancel (a write past its deadline), not the node's: carry on to close.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._cut_off()  # unless a close was decided already (its Close item is then the one queued)
            head = self._queue.popleft() if self._queue else None
            await self._close(head if isinstance(head, Close) else Close(CLOSE_TOO_SLOW, "too slow"))
            self._end()
        except Exception as exc:  # a broken socket ends this connection only, never the node
            log.debug("writer for socket %s stopped: %s", self.id, exc)
            self._end()

    async def _write_all(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            self._queued_bytes = max(0, self._queued_bytes - _size(item))
            if isinstance(item, Close):
                await self._close(item)
                self._end()
                return
            if isinstance(item, str):
                await self._send(item)
            elif isinstance(item, Live):
                await self._deliver(item)
            elif isinstance(item, ReplyLive | ReplyResume):
                await self.replies.handle(item, self._send)
            else:
                await self._catch_up(item.conversation_id, upto=None)

    def _end(self) -> None:
        self._ended, self._writer = True, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._queue = None
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    async def _close(self, close: Close) -> None:
        """Send the close frame if the transport takes it within CLOSE_TIMEOUT; return either way (the
        caller then ends the handler, and the server closes the connection)."""
        try:
            await asyncio.wait_for(self.socket.close(code=close.code, reason=close.reason), CLOSE_TIMEOUT)
        except Exception as exc:  # the socket is being given up on; nothing else to do
            log.debug("close of socket %s not sent: %r", self.id, exc)

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
        loop = asyncio.get_running_loop()
        self._send_started = started = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(started + self._write_timeout, self._check_write)
        try:
            await self._send_text(data)
        finally:
            self._send_started = None
        self.sent_frames += 1
        metrics.FRAMES_OUT.inc()

    def _check_write(self) -> None:
        """The write deadline, as a watchdog rather than a timer per frame (a timer per frame was a few
        percent of a busy node): armed by the first write after it last fired, it cancels the writer if
        the write in progress began ``write_timeout`` ago or more, else re-arms for that write's deadline."""
        self._watchdog = None
        started = self._send_started
        if started is None or self._writer is None:
            return  # no write in progress: the next one arms it again
        loop = asyncio.get_running_loop()
        if loop.time() - started >= self._write_timeout:
            self._stalled = True
            self._writer.cancel()
        else:
            self._watchdog = loop.call_at(started + self._write_timeout, self._check_write)

    async def _send_wrapped(self, data: str) -> None:
        await self.socket.send_data(data, mode="text")
