"""Every Redis key and stream name Parley uses, in one place (arq's constants.py).

Stream keys carry a hash tag per shard (``{3}``) so a Redis Cluster spreads shards over nodes while
each shard's keys stay together.
"""

from __future__ import annotations

from uuid import UUID

PREFIX = "parley"


def events_stream(shard: int) -> str:
    """Durable fan-out of domain events for the conversations hashed to ``shard`` (flow 2 -> 3, 4, 5)."""
    return f"{PREFIX}:events:{{{shard}}}"


def node_group(node_id: str) -> str:
    """One consumer group per WS node: a group load-balances, so sharing one would not broadcast."""
    return f"node:{node_id}"


#: The projectors' shared consumer group: any number of projector processes split the work.
PROJECTOR_GROUP = "projector"
#: The assistant's consumer group: turns user messages into arq jobs.
ASSISTANT_GROUP = "assistant"

#: Entries a consumer group gave up on after too many deliveries (poison events), with their origin.
DEAD_LETTER_STREAM = f"{PREFIX}:dead-letter"

#: Conversation-list changes (read_models.Change, per user) the projector and the read-cursor fast path
#: publish after commit; every WS node reads it (no group) and sends ``conversation`` frames to all the
#: user's local sockets. Capped: a node that misses some only leaves badges stale until the next change.
LIST_CHANGES_STREAM = f"{PREFIX}:list-changes"

#: Ephemeral signals (typing, presence, read) skip the outbox: a small capped stream, no consumer groups.
SIGNALS_STREAM = f"{PREFIX}:signals"

#: Written once with a random value when a Redis is first used; a changed or missing epoch means Redis
#: lost its data (restart without AOF, failover) and nodes must tell clients to resync from Postgres.
EPOCH = f"{PREFIX}:epoch"


#: Heartbeat of a WS node (TTL); the janitor removes consumer groups of nodes whose key expired.
def node_alive(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}:alive"


def presence(user_id: UUID) -> str:
    """Hash of a user's live sockets -> expiry time; the user is online while any entry is fresh."""
    return f"{PREFIX}:presence:{user_id}"


def rate_bucket(user_id: UUID) -> str:
    """Token bucket for a user's message sends, shared by every node."""
    return f"{PREFIX}:rate:send:{user_id}"


def ws_ticket(ticket: str) -> str:
    """Single-use WebSocket ticket -> user id (short TTL, taken with GETDEL)."""
    return f"{PREFIX}:ws-ticket:{ticket}"


def revoked_jti(jti: str) -> str:
    """Cache of a revoked access token id; Postgres ``revoked_tokens`` is the record."""
    return f"{PREFIX}:revoked:{jti}"


#: Present once the revocation cache has been loaded from Postgres into this Redis. Missing after a
#: Redis restart, which makes the next check reload it instead of forgetting logouts.
REVOKED_LOADED = f"{PREFIX}:revoked:loaded"


def reply_stream(reply_id: UUID) -> str:
    """Token deltas and the end of one assistant answer (short-lived, bounded): what ``resume`` replays."""
    return f"{PREFIX}:reply:{reply_id}"


def reply_meta(reply_id: UUID) -> str:
    """Hash of a reply: its conversation (membership checks for cancel/resume), trigger user, state."""
    return f"{PREFIX}:reply:{reply_id}:meta"


def reply_cancel(reply_id: UUID) -> str:
    """Present once someone asked to stop this reply; the worker checks it with every delta."""
    return f"{PREFIX}:reply:{reply_id}:cancel"


#: Every reply entry of every conversation, read by every WS node without a group (a broadcast, like
#: signals): nodes forward deltas as they come and use ``reply_stream`` only to replay.
REPLIES_LIVE = f"{PREFIX}:replies"


#: arq's job queue for `parley worker` (embeddings, assistant replies).
ARQ_QUEUE = f"{PREFIX}:arq:queue"


def embed_job_id(message_id: UUID) -> str:
    """arq job id of a message's embedding. One per message: arq will not queue a job whose id is
    queued, running or has a kept result, so a re-delivered event does not embed twice."""
    return f"embed:{message_id}"


def reply_job_id(trigger_message_id: UUID) -> str:
    """arq job id of the assistant's answer to a message: one job per trigger, however often the
    trigger's event is delivered (arq refuses an id it holds queued, running or with a kept result)."""
    return f"reply:{trigger_message_id}"
