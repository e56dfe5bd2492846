"""Reply streaming (flow 5): the worker appends each delta of an answer to ``parley:reply:{reply_id}``
(what ``resume`` replays) and to ``parley:replies`` (what every WS node forwards live), in one round
trip that also tells it whether someone asked to cancel.

Entries are ``{"r": <ReplyDelta | ReplyEnd as JSON>}``. Every entry carries the reply id, the attempt
(a job retried after a crash starts a new attempt from index 0) and, for deltas, the index; the end
says how many deltas the attempt had. Keys expire ``REPLY_TTL_SECONDS`` after the last write: the
record is the assistant message in Postgres, these are only for the live answer and short reconnects.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from domain.assistant import Usage
from infrastructure.redis import keys
from infrastructure.redis.pipeline_sink import PipelineSink

#: How long a finished (or abandoned) reply can still be resumed.
REPLY_TTL_SECONDS = 600
#: Bound on one reply's stream: far above any answer's delta count (an answer is at most a few
#: thousand tokens), low enough that a runaway cannot grow Redis.
REPLY_MAXLEN = 20_000
#: The shared live stream only has to cover a WS node's read loop falling briefly behind.
LIVE_MAXLEN = 20_000


class ReplyError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class ReplyDelta(msgspec.Struct, frozen=True, kw_only=True, tag="delta"):
    reply_id: UUID
    conversation_id: UUID
    attempt: int
    index: int
    delta: str


class ReplyEnd(msgspec.Struct, frozen=True, kw_only=True, tag="end", omit_defaults=True):
    reply_id: UUID
    conversation_id: UUID
    attempt: int
    #: Deltas this attempt sent (indexes 0 .. deltas-1).
    deltas: int
    cancelled: bool = False
    usage: Usage = Usage()
    error: ReplyError | None = None
    message_id: UUID | None = None
    seq: int | None = None


ReplyEntry = ReplyDelta | ReplyEnd

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ReplyEntry)


def decode_entry(raw: bytes) -> ReplyEntry:
    entry: ReplyEntry = _decoder.decode(raw)
    return entry


class ReplyMeta(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: UUID
    user_id: UUID | None
    state: str  # "queued" | "streaming" | "ended"


async def announce(redis: Redis, reply_id: UUID, conversation_id: UUID, user_id: UUID | None) -> None:
    """Make the reply known before its job runs, so it can be cancelled (and found) from the start."""
    fields = {"conversation_id": str(conversation_id), "user_id": str(user_id or ""), "state": "queued"}
    pipe = redis.pipeline(transaction=False)
    pipe.hsetnx(keys.reply_meta(reply_id), "conversation_id", fields["conversation_id"])
    pipe.hsetnx(keys.reply_meta(reply_id), "user_id", fields["user_id"])
    pipe.hsetnx(keys.reply_meta(reply_id), "state", fields["state"])
    pipe.expire(keys.reply_meta(reply_id), REPLY_TTL_SECONDS)
    await pipe.execute()


async def meta(redis: Redis, reply_id: UUID) -> ReplyMeta | None:
    raw: dict[bytes, bytes] = await redis.hgetall(keys.reply_meta(reply_id))  # type: ignore[misc]
    if b"conversation_id" not in raw:
        return None
    user = raw.get(b"user_id", b"").decode()
    return ReplyMeta(
        conversation_id=UUID(raw[b"conversation_id"].decode()),
        user_id=UUID(user) if user else None,
        state=raw.get(b"state", b"queued").decode(),
    )


async def request_cancel(redis: Redis, reply_id: UUID) -> None:
    await redis.set(keys.reply_cancel(reply_id), b"1", ex=REPLY_TTL_SECONDS)


async def cancel_requested(redis: Redis, reply_id: UUID) -> bool:
    return bool(await redis.exists(keys.reply_cancel(reply_id)))


async def history(redis: Redis, reply_id: UUID) -> list[ReplyEntry]:
    """Everything stored for a reply, in order (all attempts)."""
    items: Any = await redis.xrange(keys.reply_stream(reply_id))
    return [decode_entry(fields[b"r"]) for _id, fields in items if b"r" in fields]


class ReplyWriter:
    """The worker's side of one attempt at one reply."""

    def __init__(
        self, redis: Redis, reply_id: UUID, conversation_id: UUID, attempt: int, *, sink: PipelineSink | None = None
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.reply_id = reply_id
        self.conversation_id = conversation_id
        self.attempt = attempt
        self.deltas_written = 0

    async def start(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        fields = {"conversation_id": str(self.conversation_id), "state": "streaming"}
        pipe.hset(keys.reply_meta(self.reply_id), mapping=fields)
        pipe.expire(keys.reply_meta(self.reply_id), REPLY_TTL_SECONDS)
        await pipe.execute()

    async def deltas(self, texts: list[str]) -> bool:
        """Append the next deltas (one round trip, whatever their number, shared with other replies when
        a sink is given); True when a cancel was requested (the caller stops)."""
        first = self.deltas_written == 0
        entries = []
        for text in texts:
            entries.append(
                ReplyDelta(
                    reply_id=self.reply_id,
                    conversation_id=self.conversation_id,
                    attempt=self.attempt,
                    index=self.deltas_written,
                    delta=text,
                )
            )
            self.deltas_written += 1

        def build(pipe: Any) -> None:
            for entry in entries:
                self._append(pipe, entry)
            if first:
                pipe.expire(keys.reply_stream(self.reply_id), REPLY_TTL_SECONDS)
            pipe.exists(keys.reply_cancel(self.reply_id))

        if self.sink is not None:
            results = await self.sink.execute(build)
        else:
            pipe = self.redis.pipeline(transaction=False)
            build(pipe)
            results = await pipe.execute(raise_on_error=False)
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
        return bool(results[-1])

    async def end(self, end: ReplyEnd) -> None:
        pipe = self.redis.pipeline(transaction=False)
        self._append(pipe, end)
        pipe.expire(keys.reply_stream(self.reply_id), REPLY_TTL_SECONDS)
        pipe.hset(keys.reply_meta(self.reply_id), "state", "ended")
        pipe.expire(keys.reply_meta(self.reply_id), REPLY_TTL_SECONDS)
        await pipe.execute()

    def ending(self, **fields: Any) -> ReplyEnd:
        return ReplyEnd(
            reply_id=self.reply_id,
            conversation_id=self.conversation_id,
            attempt=self.attempt,
            deltas=self.deltas_written,
            **fields,
        )

    def _append(self, pipe: Any, entry: ReplyEntry) -> None:
        data = {"r": _encoder.encode(entry)}
        pipe.xadd(keys.reply_stream(self.reply_id), data, maxlen=REPLY_MAXLEN, approximate=True)
        pipe.xadd(keys.REPLIES_LIVE, data, maxlen=LIVE_MAXLEN, approximate=True)
