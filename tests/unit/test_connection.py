"""The per-socket delivery rule: drop seqs at or below the cursor, fill gaps from the store first."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from app.ws import frames
from app.ws.connection import CatchUp, Close, Connection, Live
from domain.values import Message
from tests.factories import MessageFactory, session_of

CONV = uuid.uuid4()


def message(seq: int) -> Message:
    return MessageFactory.build(conversation_id=CONV, seq=seq)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def send_data(self, data: str, mode: str = "text") -> None:
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def make(store_upto: int, cursor: int) -> tuple[Connection, FakeSocket]:
    socket = FakeSocket()

    async def fetch_after(conversation_id: uuid.UUID, after: int, limit: int) -> list[Message]:
        return [message(s) for s in range(after + 1, min(store_upto, after + limit) + 1)]

    conn = Connection(socket, session_of(uuid.uuid4()), fetch_after)  # type: ignore[arg-type]
    conn.cursors[CONV] = cursor
    return conn, socket


async def drain(conn: Connection, *items: Any) -> None:
    for item in items:
        conn.offer(item)
    conn.offer(Close(1000, "done"))
    await asyncio.wait_for(conn.finished(), 5)


def live(seq: int) -> Live:
    return Live(CONV, seq, frames.message_frame(message(seq)))


def seqs(socket: FakeSocket) -> list[int]:
    return [f["seq"] for f in socket.sent if f["type"] == "message"]


async def test_duplicates_and_old_seqs_are_dropped() -> None:
    conn, socket = make(store_upto=4, cursor=2)
    await drain(conn, live(2), live(3), live(3), live(1), live(4), live(4))
    assert seqs(socket) == [3, 4]


async def test_a_gap_is_filled_from_the_store_before_the_live_message() -> None:
    conn, socket = make(store_upto=9, cursor=2)
    await drain(conn, live(3), live(7), live(8))
    assert seqs(socket) == [3, 4, 5, 6, 7, 8]


async def test_catch_up_replays_everything_after_the_cursor_in_pages() -> None:
    conn, socket = make(store_upto=1234, cursor=10)
    await drain(conn, CatchUp(CONV), live(1234), live(1235))
    assert seqs(socket) == list(range(11, 1236))


async def test_messages_of_a_conversation_not_joined_are_not_sent() -> None:
    conn, socket = make(store_upto=5, cursor=0)
    conn.cursors.clear()
    await drain(conn, live(1), CatchUp(CONV))
    assert socket.sent == []


async def test_a_client_that_cannot_keep_up_is_closed_with_1013_instead_of_buffering() -> None:
    conn, socket = make(store_upto=0, cursor=0)
    for seq in range(1, 5000):
        conn.offer(live(seq))
    await asyncio.wait_for(conn.finished(), 5)
    assert socket.closed is not None and socket.closed[0] == 1013
    assert socket.sent == []


async def test_ending_a_session_closes_at_once_and_drops_what_was_queued() -> None:
    conn, socket = make(store_upto=0, cursor=0)
    conn.offer(live(1))  # queued before the decision, not yet written: dropped
    conn.end(4401, "session expired")
    conn.offer(live(2))  # offered after the decision: never sent
    await asyncio.wait_for(conn.finished(), 5)
    assert socket.closed == (4401, "session expired") and socket.sent == []


async def test_a_client_past_the_byte_bound_is_closed_with_1013() -> None:
    socket = FakeSocket()
    conn = Connection(socket, session_of(uuid.uuid4()), None, max_queued_bytes=10_000)  # type: ignore[arg-type]
    conn.cursors[CONV] = 0
    for seq in range(1, 100):  # ~300 bytes each: past 10,000 bytes long before 1,000 frames
        conn.offer(live(seq))
    await asyncio.wait_for(conn.finished(), 5)
    assert socket.closed is not None and socket.closed[0] == 1013


class StuckSocket(FakeSocket):
    """A transport whose buffer is full: sends never complete (the client stopped reading)."""

    async def send_data(self, data: str, mode: str = "text") -> None:
        await asyncio.Event().wait()


async def test_a_write_that_cannot_complete_within_the_deadline_closes_with_1013() -> None:
    socket = StuckSocket()
    conn = Connection(socket, session_of(uuid.uuid4()), None, write_timeout=0.05)  # type: ignore[arg-type]
    conn.cursors[CONV] = 0
    conn.offer(live(1))
    await asyncio.wait_for(conn.finished(), 5)
    assert socket.closed is not None and socket.closed[0] == 1013


class SlowSocket(FakeSocket):
    """Every send takes ``delay``; from frame ``stuck_at`` on, sends never complete."""

    def __init__(self, delay: float, stuck_at: int | None = None) -> None:
        super().__init__()
        self.delay, self.stuck_at = delay, stuck_at

    async def send_data(self, data: str, mode: str = "text") -> None:
        if self.stuck_at is not None and len(self.sent) + 1 >= self.stuck_at:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        await super().send_data(data, mode)


async def test_the_write_deadline_is_per_write_so_a_long_burst_of_quick_writes_is_delivered() -> None:
    socket = SlowSocket(delay=0.02)
    conn = Connection(socket, session_of(uuid.uuid4()), None, write_timeout=0.05)  # type: ignore[arg-type]
    conn.cursors[CONV] = 0
    await drain(conn, *(live(seq) for seq in range(1, 11)))  # 0.2 s in all, each write well inside 0.05 s
    assert seqs(socket) == list(range(1, 11)) and socket.closed == (1000, "done")


async def test_a_write_that_stalls_after_others_went_out_closes_with_1013() -> None:
    socket = SlowSocket(delay=0.001, stuck_at=3)
    conn = Connection(socket, session_of(uuid.uuid4()), None, write_timeout=0.05)  # type: ignore[arg-type]
    conn.cursors[CONV] = 0
    for seq in range(1, 6):
        conn.offer(live(seq))
    await asyncio.wait_for(conn.finished(), 5)
    assert seqs(socket) == [1, 2] and socket.closed is not None and socket.closed[0] == 1013


async def test_an_idle_socket_keeps_no_writer_task() -> None:
    socket = FakeSocket()
    conn = Connection(socket, session_of(uuid.uuid4()), None, linger_seconds=0.05)  # type: ignore[arg-type]
    conn.cursors[CONV] = 0
    conn.offer(live(1))
    await asyncio.sleep(0.2)  # past the linger
    assert seqs(socket) == [1] and conn.writer is None and not conn.ended
    conn.offer(live(2))  # a new writer for the next frame
    await drain(conn, live(3))
    assert seqs(socket) == [1, 2, 3] and conn.ended


async def test_a_busy_socket_keeps_one_writer_between_frames() -> None:
    socket = FakeSocket()
    conn = Connection(socket, session_of(uuid.uuid4()), None, linger_seconds=5)  # type: ignore[arg-type]
    conn.cursors[CONV] = 0
    conn.offer(live(1))
    await asyncio.sleep(0.01)
    writer = conn.writer
    assert seqs(socket) == [1] and writer is not None and not writer.done()
    conn.offer(live(2))  # within the linger: the same writer sends it
    await asyncio.sleep(0.01)
    assert seqs(socket) == [1, 2] and conn.writer is writer
    await drain(conn)
    assert conn.ended and conn.writer is None and writer.done()


def test_a_session_past_its_expiry_is_expired() -> None:
    conn, _ = make(store_upto=0, cursor=0)
    conn.session = session_of(conn.user_id, ttl_seconds=-1)
    assert conn.session_expired()
    conn.session = session_of(conn.user_id, ttl_seconds=60)
    assert not conn.session_expired()
