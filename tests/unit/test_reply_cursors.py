"""The per-socket reply rule: deltas contiguous by index, once, the end after every delta, nothing after."""

from __future__ import annotations

import json
import uuid
from typing import Any

from app.ws.replies import ReplyCursors, ReplyLive, ReplyResume, reply_frame
from infrastructure.redis.replies import ReplyDelta, ReplyEnd, ReplyEntry

REPLY = uuid.uuid4()
CONV = uuid.uuid4()


def delta(index: int, attempt: int = 1) -> ReplyDelta:
    return ReplyDelta(reply_id=REPLY, conversation_id=CONV, attempt=attempt, index=index, delta=f"d{index}.{attempt}")


def end(deltas: int, attempt: int = 1) -> ReplyEnd:
    return ReplyEnd(reply_id=REPLY, conversation_id=CONV, attempt=attempt, deltas=deltas)


class Socket:
    def __init__(self, stored: list[ReplyEntry]) -> None:
        self.stored = stored
        self.sent: list[dict[str, Any]] = []
        self.cursors = ReplyCursors(self.fetch)

    async def fetch(self, reply_id: uuid.UUID) -> list[ReplyEntry]:
        return list(self.stored)

    async def send(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def live(self, *entries: ReplyEntry) -> None:
        for entry in entries:
            await self.cursors.handle(ReplyLive(entry, reply_frame(entry)), self.send)

    def seen(self) -> list[str]:
        return [f"{f['type']}:{f.get('index', '')}:{f['attempt']}" for f in self.sent]


async def test_duplicates_are_dropped_and_gaps_filled_from_the_reply_stream() -> None:
    socket = Socket([delta(0), delta(1), delta(2), delta(3)])

    await socket.live(delta(0), delta(0), delta(3), delta(2), end(4))

    assert socket.seen() == ["stream:0:1", "stream:1:1", "stream:2:1", "stream:3:1", "stream_end::1"]


async def test_missing_deltas_are_sent_before_the_end_and_nothing_after_it() -> None:
    socket = Socket([delta(0), delta(1), delta(2)])

    await socket.live(delta(0), end(3), delta(2), end(3))

    assert socket.seen() == ["stream:0:1", "stream:1:1", "stream:2:1", "stream_end::1"]


async def test_resume_replays_from_the_index_then_continues_live_without_repeats() -> None:
    socket = Socket([delta(0), delta(1), delta(2), delta(3)])

    await socket.cursors.handle(ReplyResume(REPLY, 2), socket.send)
    await socket.live(delta(3), delta(4), end(5))

    assert socket.seen() == ["stream:2:1", "stream:3:1", "stream:4:1", "stream_end::1"]


async def test_resume_of_an_ended_reply_replays_its_end() -> None:
    socket = Socket([delta(0), delta(1), end(2)])
    await socket.live(delta(0), delta(1), end(2))
    socket.sent.clear()

    await socket.cursors.handle(ReplyResume(REPLY, 1), socket.send)

    assert socket.seen() == ["stream:1:1", "stream_end::1"]


async def test_a_new_attempt_starts_from_index_zero() -> None:
    socket = Socket([delta(0), delta(1), delta(0, attempt=2), delta(1, attempt=2)])

    await socket.live(delta(0), delta(1), delta(1, attempt=2), delta(2), end(2, attempt=2))

    assert socket.seen() == ["stream:0:1", "stream:1:1", "stream:0:2", "stream:1:2", "stream_end::2"]


async def test_a_socket_that_joined_mid_answer_gets_the_answer_so_far_first() -> None:
    socket = Socket([delta(0), delta(1), delta(2)])

    await socket.live(delta(2), delta(3), end(4))

    assert socket.seen() == ["stream:0:1", "stream:1:1", "stream:2:1", "stream:3:1", "stream_end::1"]
