"""The send rate limit against a real Redis: one bucket per user shared by every node, decided from
leases (tokens a node took for the user) where it can, never above the shared limit."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from domain.errors import RateLimited
from infrastructure.bootstrap import Services
from infrastructure.redis import keys
from infrastructure.redis.rate_limit import DECISIONS, LEASE_SECONDS, SendRateLimiter


def _decided(source: str) -> float:
    return DECISIONS.labels(source)._value.get()


async def _send_until_refused(limiter: SendRateLimiter, user: uuid.UUID, at_most: int = 1000) -> int:
    for allowed in range(at_most):
        try:
            await limiter.check(user)
        except RateLimited:
            return allowed
    raise AssertionError(f"{at_most} sends allowed")


async def test_a_steady_sender_under_the_limit_is_mostly_decided_without_redis(services: Services) -> None:
    nodes = [SendRateLimiter(services.redis, rate=100, burst=100) for _ in range(2)]
    user = uuid.uuid4()
    from_lease, from_redis = _decided("lease"), _decided("redis")
    for i in range(80):  # 80 a second, ten in a row on one node, then ten on the other
        await nodes[i // 10 % 2].check(user)
        await asyncio.sleep(1 / 80)
    leased, asked = _decided("lease") - from_lease, _decided("redis") - from_redis
    assert leased > asked, f"{leased} sends decided from leases, {asked} by asking Redis"


async def test_a_sender_over_the_limit_on_two_nodes_gets_no_more_than_the_shared_bucket(services: Services) -> None:
    nodes = [SendRateLimiter(services.redis, rate=10, burst=20) for _ in range(2)]
    user = uuid.uuid4()
    started = time.monotonic()
    allowed = refused = 0
    for i in range(120):  # 60 sends a second over two nodes for 2 s: six times the rate
        try:
            await nodes[i // 10 % 2].check(user)
            allowed += 1
        except RateLimited:
            refused += 1
        await asyncio.sleep(1 / 60)
    assert refused and allowed <= 20 + 10 * (time.monotonic() - started) + 1, allowed


async def test_a_lease_s_unused_tokens_go_back_to_the_user_s_bucket(services: Services) -> None:
    first, second = (SendRateLimiter(services.redis, rate=10, burst=20) for _ in range(2))
    user = uuid.uuid4()
    for _ in range(4):  # leases of 1, then 2 (one left), then 4 once that one is spent: 3 left
        await first.check(user)
    await _send_until_refused(second, user)  # the bucket is empty; the first node still holds 3
    await asyncio.sleep(LEASE_SECONDS + 0.1)
    bucket = keys.rate_bucket(user)
    tokens_before, at_before = map(float, await services.redis.hmget(bucket, "tokens", "at"))

    await first.check(user)  # its lease expired: 3 go back, and it takes a new one of 1 (it sent 1 with it)

    tokens_after, at_after = map(float, await services.redis.hmget(bucket, "tokens", "at"))
    refilled = (at_after - at_before) * 10  # Redis' own clock, from the bucket's timestamps
    assert tokens_after == pytest.approx(tokens_before + refilled + 3 - 1)


async def test_two_nodes_hammering_one_user_stay_within_the_burst(services: Services) -> None:
    nodes = [SendRateLimiter(services.redis, rate=1, burst=20) for _ in range(2)]
    user = uuid.uuid4()

    async def hammer(limiter: SendRateLimiter) -> int:
        return sum(await asyncio.gather(*(_one(limiter, user) for _ in range(30))))

    started = time.monotonic()
    allowed = sum(await asyncio.gather(*(hammer(n) for n in nodes)))
    assert 20 <= allowed <= 20 + (time.monotonic() - started) + 1


async def _one(limiter: SendRateLimiter, user: uuid.UUID) -> int:
    try:
        await limiter.check(user)
    except RateLimited:
        return 0
    return 1
