"""Assistant replies on the WS node: the live read of ``parley:replies`` and, per socket, the rule that
makes every client see a reply's deltas contiguous by index, once, and nothing after its end.

Per socket and reply the writer keeps a cursor ``(attempt, next index)``:

- a delta below the cursor is a duplicate (dropped); one above it reveals a gap (the socket resumed
  while deltas were in flight, or the node's read fell behind), which is filled from the reply's own
  stream before the delta is sent;
- a delta of a newer attempt (the job was retried after a crash) starts that attempt from index 0;
- ``stream_end`` is sent after any missing deltas, then the reply is closed for this socket: anything
  else that arrives for it is dropped, until the client asks to ``resume`` it again.

A socket joined to the conversation follows every reply of it from index 0 (one that joined
mid-answer gets the answer so far first); ``resume`` replays from ``from_index`` (then goes live),
with or without a join.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from app.ws import frames
from infrastructure.redis import keys, replies
from infrastructure.redis.broadcast import BroadcastReader
from infrastructure.redis.replies import ReplyDelta, ReplyEnd, ReplyEntry

log = logging.getLogger("parley.ws.replies")

FetchReply = Callable[[UUID], Awaitable[list[ReplyEntry]]]
Send = Callable[[str], Awaitable[None]]

#: Replies a socket remembers as ended (to drop their late entries); old ones are forgotten first.
MAX_ENDED = 256


@dataclass(frozen=True, slots=True)
class ReplyLive:
    """A live reply entry, its frame encoded once for every socket."""

    entry: ReplyEntry
    frame: str


@dataclass(frozen=True, slots=True)
class ReplyResume:
    reply_id: UUID
    from_index: int


def reply_frame(entry: ReplyEntry) -> str:
    if isinstance(entry, ReplyDelta):
        return frames.encode(
            frames.StreamDelta(
                conversation_id=entry.conversation_id,
                reply_id=entry.reply_id,
                attempt=entry.attempt,
                index=entry.index,
                delta=entry.delta,
            )
        )
    error = entry.error
    return frames.encode(
        frames.StreamEnd(
            conversation_id=entry.conversation_id,
            reply_id=entry.reply_id,
            attempt=entry.attempt,
            message_id=entry.message_id,
            seq=entry.seq,
            cancelled=entry.cancelled,
            usage=frames.Usage(input_tokens=entry.usage.input_tokens, output_tokens=entry.usage.output_tokens),
            error=None if error is None else frames.StreamError(code=error.code, message=error.message),
        )
    )


class ReplyCursors:
    """One socket's replies: the writer task calls ``handle`` for every reply item, in queue order."""

    def __init__(self, fetch: FetchReply) -> None:
        self._fetch = fetch
        self.cursors: dict[UUID, tuple[int, int]] = {}
        #: Replies this socket asked to resume (the hub routes them to it even without a join).
        self.followed: set[UUID] = set()
        self._ended: OrderedDict[UUID, None] = OrderedDict()

    async def handle(self, item: ReplyLive | ReplyResume, send: Send) -> None:
        if isinstance(item, ReplyResume):
            await self._resume(item, send)
        elif isinstance(item.entry, ReplyDelta):
            await self._delta(item.entry, item.frame, send)
        else:
            await self._end(item.entry, item.frame, send)

    async def _delta(self, delta: ReplyDelta, frame: str, send: Send) -> None:
        if delta.reply_id in self._ended:
            return
        # A reply first seen past index 0 (the socket joined mid-answer) starts with the answer so far.
        attempt, next_index = self.cursors.get(delta.reply_id, (delta.attempt, 0))
        if delta.attempt < attempt:
            return
        if delta.attempt > attempt:
            attempt, next_index = delta.attempt, 0
        if delta.index < next_index:
            return
        if delta.index > next_index:
            await self._fill(delta.reply_id, attempt, next_index, delta.index, send)
        await send(frame)
        self.cursors[delta.reply_id] = (attempt, delta.index + 1)

    async def _end(self, end: ReplyEnd, frame: str, send: Send) -> None:
        if end.reply_id in self._ended:
            return
        cursor = self.cursors.get(end.reply_id)
        if cursor is not None and cursor[0] > end.attempt:
            return
        if cursor is not None and cursor[0] == end.attempt and cursor[1] < end.deltas:
            await self._fill(end.reply_id, end.attempt, cursor[1], end.deltas, send)
        await send(frame)
        self._close(end.reply_id)

    async def _resume(self, resume: ReplyResume, send: Send) -> None:
        self._ended.pop(resume.reply_id, None)
        stored = await self._fetch(resume.reply_id)
        attempt = max((e.attempt for e in stored), default=1)
        next_index = resume.from_index
        for entry in stored:
            if entry.attempt != attempt:
                continue
            if isinstance(entry, ReplyDelta):
                if entry.index >= next_index:
                    await send(reply_frame(entry))
                    next_index = entry.index + 1
            else:
                await send(reply_frame(entry))
                self._close(resume.reply_id)
                return
        self.cursors[resume.reply_id] = (attempt, next_index)

    async def _fill(self, reply_id: UUID, attempt: int, start: int, stop: int, send: Send) -> None:
        """Send deltas ``start .. stop-1`` of ``attempt`` from the reply's stream."""
        for entry in await self._fetch(reply_id):
            if isinstance(entry, ReplyDelta) and entry.attempt == attempt and start <= entry.index < stop:
                await send(reply_frame(entry))

    def _close(self, reply_id: UUID) -> None:
        self.cursors.pop(reply_id, None)
        self._ended[reply_id] = None
        while len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)


class ReplyFanout:
    """Reads every reply entry from ``parley:replies`` (no group: every node sees all) for the hub."""

    def __init__(self, redis: Redis, route: Callable[[ReplyEntry], None]) -> None:
        self._route = route
        self._reader = BroadcastReader(redis, keys.REPLIES_LIVE, b"r", self._dispatch)

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop``. Run again after a crash, it goes on from the last entry it routed."""
        await self._reader.run(stop)

    def _dispatch(self, raw: bytes) -> None:
        try:
            entry = replies.decode_entry(raw)
        except msgspec.DecodeError:
            log.error("undecodable reply entry %r; skipped", raw[:200])
            return
        self._route(entry)
