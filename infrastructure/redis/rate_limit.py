"""A token bucket in Redis, shared by every node: ``rate`` tokens per second, at most ``burst`` saved up.

Time comes from Redis (``TIME`` inside the script), never from the calling node: a node whose clock
runs ahead would otherwise refill the bucket on every call it makes and let a user spread over two
nodes double the limit.

Degraded rule (docs/operations.md): when Redis does not answer within ``REDIS_TIMEOUT`` (paused,
down, partitioned), the send is not held up: the limiter falls back to a token bucket of the same
rate and burst kept in this process, per user, and stops asking Redis for ``BREAKER_SECONDS`` before
trying again. During an outage a user spread over N nodes can therefore send up to N times the limit;
``parley_degraded_total{component="rate_limiter"}`` counts the decisions taken that way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
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
#: Local buckets kept at most (oldest dropped): bounds memory during a long outage.
MAX_LOCAL_BUCKETS = 100_000

# KEYS[1] bucket; ARGV: rate, burst, cost. Returns {allowed, retry_after_ms}. The clock is Redis'
# (TIME is allowed in scripts since Redis 5, which replicate effects, not the script).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local retry_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, retry_ms}
"""


@dataclass
class _Bucket:
    tokens: float
    at: float


class SendRateLimiter:
    def __init__(self, redis: Redis, *, rate: float, burst: int) -> None:
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._rate = rate
        self._burst = burst
        self._skip_redis_until = 0.0
        self._local: dict[UUID, _Bucket] = {}

    async def check(self, user_id: UUID) -> None:
        """Take one token or raise RateLimited with the seconds until one is available."""
        answer = await self._ask_redis(user_id) if time.monotonic() >= self._skip_redis_until else None
        if answer is None:
            DEGRADED.labels("rate_limiter").inc()
            answer = self._take_local(user_id)
        allowed, retry_ms = answer
        if not allowed:
            raise RateLimited("too many messages; slow down", retry_after=max(retry_ms, 1) / 1000)

    async def _ask_redis(self, user_id: UUID) -> tuple[bool, int] | None:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the call in a task of its own,
            # a cost every send paid.
            async with asyncio.timeout(REDIS_TIMEOUT):
                allowed, retry_ms = await self._script(
                    keys=[keys.rate_bucket(user_id)], args=[self._rate, self._burst, 1]
                )
        except (RedisError, OSError, TimeoutError):
            self._skip_redis_until = time.monotonic() + BREAKER_SECONDS
            return None
        return bool(int(allowed)), int(retry_ms)

    def _take_local(self, user_id: UUID) -> tuple[bool, int]:
        """The same bucket, kept in this process (monotonic clock): the degraded rule."""
        now = time.monotonic()
        bucket = self._local.pop(user_id, None) or _Bucket(tokens=float(self._burst), at=now)
        self._local[user_id] = bucket  # re-inserted last: the dict is kept in least-recently-used order
        if len(self._local) > MAX_LOCAL_BUCKETS:
            del self._local[next(iter(self._local))]
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True, 0
        return False, int((1 - bucket.tokens) / self._rate * 1000) + 1
