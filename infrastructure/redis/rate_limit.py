"""A token bucket in Redis, shared by every node: ``rate`` tokens per second, at most ``burst`` saved up."""

from __future__ import annotations

import time
from uuid import UUID

from redis.asyncio import Redis

from domain.errors import RateLimited
from infrastructure.redis import keys

# KEYS[1] bucket; ARGV: rate, burst, now (seconds, float), cost. Returns {allowed, retry_after_ms}.
# The clock is the caller's (all nodes use NTP time); Redis' TIME would add a round trip.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
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


class SendRateLimiter:
    def __init__(self, redis: Redis, *, rate: float, burst: int) -> None:
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._rate = rate
        self._burst = burst

    async def check(self, user_id: UUID) -> None:
        """Take one token or raise RateLimited with the seconds until one is available."""
        allowed, retry_ms = await self._script(
            keys=[keys.rate_bucket(user_id)], args=[self._rate, self._burst, time.time(), 1]
        )
        if not int(allowed):
            raise RateLimited("too many messages; slow down", retry_after=max(int(retry_ms), 1) / 1000)
