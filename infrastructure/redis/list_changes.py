"""Conversation-list changes on their way to the users' sockets (flow 4 -> 3).

After the projector (or ``PUT .../read``) commits a change to ``read_conversation_list``, it appends the
changed rows to ``parley:list-changes`` in one entry per batch. Every WS node reads that stream without a
consumer group (a broadcast, like the signals stream) and sends a ``conversation`` frame to every local
socket of each user concerned, joined to the conversation or not. The stream is capped and best-effort:
the read models in PostgreSQL stay the record, and a client refreshes its list with
``GET /api/conversations`` after a reconnect.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from infrastructure.db.read_models import Change, ListRow, Removed
from infrastructure.redis import keys

#: Entries kept; each holds one batch's changes.
MAXLEN = 10_000

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[ListRow | Removed])


def latest(changes: Sequence[Change]) -> list[Change]:
    """The last change per (user, conversation), in first-seen order."""
    last: dict[tuple[object, object], Change] = {}
    for change in changes:
        last[(change.user_id, change.conversation_id)] = change
    return list(last.values())


async def publish(redis: Redis, changes: Sequence[Change]) -> None:
    if changes:
        await redis.xadd(keys.LIST_CHANGES_STREAM, {"c": _encoder.encode(latest(changes))}, maxlen=MAXLEN)


def decode(raw: bytes) -> list[Change]:
    return list(_decoder.decode(raw))
