"""A token bucket in Redis, shared by every node: ``rate`` tokens per second, at most ``burst`` saved up.

Time comes from Redis (``TIME`` inside the script), never from the calling node: a node whose clock
runs ahead would otherwise refill the bucket on every call it makes and let a user spread over two
nodes double the limit.

Degraded rule (docs/operations.md): when Redis does not answer within ``REDIS_TIMEOUT`` (paused,
down, partitioned), the send is not held up: the limiter falls back to a token bucket of the same
rate and burst kept in this process, per user, and stops asking Redis for ``BREAKER_SECONDS`` before
trying again. During an outage a user spread over N nodes can therefore send up to N times the limit;
``parley_degraded_total{component="rate_limiter"}`` counts the decisions taken that way.

Leases: a node takes tokens from the shared bucket for a user a few at a time, and decides that user's
next sends from them without asking Redis, for at most ``LEASE_SECONDS``. A send that asks Redis costs a
round trip on its way to the ack (milliseconds on a busy node, which the send waits for twice: the call
and the event loop's turn to read its answer); a user who sends steadily gets leases sized by what they
used of the last one, so most of their sends ask nothing. The shared limit is never exceeded: a lease
holds tokens already taken from the bucket. What a lease did not use goes back with the user's next
call (an idle user's tokens refill within ``burst / rate`` seconds anyway), so a user spread over two
nodes is refused at most while the other node holds a lease: half a second, a few tokens. A user who
sends one message at a time gets leases of one token, which is the call per send of before.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.errors import RateLimited
from infrastructure.redis import keys

#: Decisions taken without the shared store (Redis for the limiter): an outage shows here.
DEGRADED = Counter(
    "parley_degraded_total", "Decisions taken in a degraded mode because a dependency did not answer", ["component"]
)

#: A send waits at most this long for Redis' answer before the local bucket decides.
REDIS_TIMEOUT = 0.25
#: After a failed call Redis is not asked again for this long (a paused Redis would otherwise cost
#: every send the whole timeout).
BREAKER_SECONDS = 2.0
#: Local buckets and leases kept at most (oldest dropped): bounds memory during a long outage.
MAX_LOCAL_BUCKETS = 100_000
_V = TypeVar("_V")

#: How long a node may decide a user's sends from tokens it took for them.
LEASE_SECONDS = 0.5

DECISIONS = Counter(
    "parley_rate_limit_decisions_total",
    "Sends the rate limiter let through or refused, by where the decision came from",
    ["source"],
)

# KEYS[1] bucket; ARGV: rate, burst, want, refund. Puts back ``refund`` unused tokens of an earlier
# lease, then takes up to ``want`` whole tokens (at least one, or none). Returns {taken, retry_after_ms}.
# The clock is Redis' (TIME is allowed in scripts since Redis 5, which replicate effects, not the script).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local refund = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate + refund)
local taken = 0
local retry_ms = 0
if tokens >= 1 then
  taken = math.min(want, math.floor(tokens))
  tokens = tokens - taken
else
  retry_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, retry_ms}
"""


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class _Lease:
    """Tokens taken from the shared bucket for one user, not used yet."""

    tokens: int
    expires: float  # monotonic
    #: Sends decided from this lease so far: the next lease's size.
    used: int = 0


class SendRateLimiter:
    def __init__(self, redis: Redis, *, rate: float, burst: int) -> None:
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._rate = rate
        self._burst = burst
        #: A lease holds at most what the user may send in its lifetime (and never more than the burst).
        self._max_lease = max(1, min(burst, int(rate * LEASE_SECONDS)))
        self._skip_redis_until = 0.0
        self._local: dict[UUID, _Bucket] = {}
        self._leases: dict[UUID, _Lease] = {}
        self._from_lease = DECISIONS.labels("lease")
        self._from_redis = DECISIONS.labels("redis")
        self._from_local = DECISIONS.labels("local")
        self._degraded = DEGRADED.labels("rate_limiter")

    async def check(self, user_id: UUID) -> None:
        """Take one token or raise RateLimited with the seconds until one is available."""
        now = time.monotonic()
        lease = self._leases.get(user_id)
        if lease is not None and lease.tokens and now < lease.expires:
            lease.tokens -= 1
            lease.used += 1
            self._from_lease.inc()
            return
        refund, want = (0, 1) if lease is None else self._renew(lease, now)
        answer = await self._ask_redis(user_id, want, refund) if now >= self._skip_redis_until else None
        if answer is None:
            self._degraded.inc()
            self._from_local.inc()
            allowed, retry_ms = self._take_local(user_id)
            if not allowed:
                raise _refused(retry_ms)
            return
        self._from_redis.inc()
        taken, retry_ms = answer
        if not taken:
            self._leases.pop(user_id, None)
            raise _refused(retry_ms)
        self._keep_lease(user_id, _Lease(tokens=taken - 1, expires=time.monotonic() + LEASE_SECONDS, used=1))

    def _renew(self, lease: _Lease, now: float) -> tuple[int, int]:
        """The refund and size of the user's next lease. The last one is spent or expired: its unused
        tokens go back (taken off it now, so that a concurrent send of the same user cannot return them
        twice). Spent before it expired: the user sends faster than it allowed, so twice its size; else
        the size of what the user sent during it (one at a time for a user who sends one at a time)."""
        refund, lease.tokens = lease.tokens, 0
        want = 2 * lease.used if now < lease.expires else lease.used
        return refund, max(1, min(self._max_lease, want))

    def _keep_lease(self, user_id: UUID, lease: _Lease) -> None:
        """Replace the user's lease; another send of theirs may have taken one meanwhile, whose unused
        tokens are kept (they were taken from the bucket)."""
        current = self._leases.get(user_id)
        if current is not None and time.monotonic() < current.expires:
            lease.tokens += current.tokens
        _keep_recent(self._leases, user_id, lease)

    async def _ask_redis(self, user_id: UUID, want: int, refund: int) -> tuple[int, int] | None:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the call in a task of its own,
            # a cost every send paid.
            async with asyncio.timeout(REDIS_TIMEOUT):
                taken, retry_ms = await self._script(
                    keys=[keys.rate_bucket(user_id)], args=[self._rate, self._burst, want, refund]
                )
        except (RedisError, OSError, TimeoutError):
            self._skip_redis_until = time.monotonic() + BREAKER_SECONDS
            return None
        return int(taken), int(retry_ms)

    def _take_local(self, user_id: UUID) -> tuple[bool, int]:
        """The same bucket, kept in this process (monotonic clock): the degraded rule."""
        now = time.monotonic()
        bucket = self._local.get(user_id) or _Bucket(tokens=float(self._burst), at=now)
        _keep_recent(self._local, user_id, bucket)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True, 0
        return False, int((1 - bucket.tokens) / self._rate * 1000) + 1


def _keep_recent(kept: dict[UUID, _V], user_id: UUID, value: _V) -> None:
    """Store ``value`` as the most recently used entry; past ``MAX_LOCAL_BUCKETS`` the least recently
    used goes (a dict keeps insertion order, so re-inserting moves an entry to the end)."""
    kept.pop(user_id, None)
    kept[user_id] = value
    if len(kept) > MAX_LOCAL_BUCKETS:
        del kept[next(iter(kept))]


def _refused(retry_ms: int) -> RateLimited:
    return RateLimited("too many messages; slow down", retry_after=max(retry_ms, 1) / 1000)
