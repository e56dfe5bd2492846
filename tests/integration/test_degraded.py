"""Degraded rules without a mock: a Redis that does not answer, a refused deep-nested body."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from domain.errors import RateLimited, Unauthorized
from infrastructure.bootstrap import Services
from infrastructure.embedded import free_port
from infrastructure.redis.rate_limit import DEGRADED, SendRateLimiter
from tests.integration.conftest import MakeUser, assert_error


async def test_the_rate_limiter_decides_locally_at_the_same_rate_when_redis_does_not_answer() -> None:
    nobody = Redis(port=free_port(), socket_connect_timeout=0.1)  # nothing listens there
    limiter = SendRateLimiter(nobody, rate=10, burst=20)
    user = uuid.uuid4()
    degraded_before = DEGRADED.labels("rate_limiter")._value.get()
    started = time.monotonic()
    allowed = 0
    with pytest.raises(RateLimited):
        for _ in range(100):
            await limiter.check(user)
            allowed += 1
    assert allowed >= 20 and allowed <= 20 + 10 * (time.monotonic() - started) + 1
    assert DEGRADED.labels("rate_limiter")._value.get() > degraded_before
    await nobody.aclose()


async def test_a_ticket_is_single_use_even_after_redis_loses_everything(
    client: AsyncTestClient[Any], make_user: MakeUser, services: Services
) -> None:
    user = await make_user()
    ticket = (await client.post("/api/auth/ws-ticket", headers=user.headers)).json()["ticket"]
    assert (await services.auth.redeem_ws_ticket(ticket)).user_id == user.id
    await services.redis.flushall()
    with pytest.raises(Unauthorized, match="invalid, used or expired ticket"):
        await services.auth.redeem_ws_ticket(ticket)


async def test_a_ticket_is_not_an_access_token(client: AsyncTestClient[Any], make_user: MakeUser) -> None:
    user = await make_user()
    ticket = (await client.post("/api/auth/ws-ticket", headers=user.headers)).json()["ticket"]
    assert_error(await client.get("/api/me", headers={"Authorization": f"Bearer {ticket}"}), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("depth", [1_000, 10_000])
async def test_a_body_nested_thousands_deep_is_400_even_unauthenticated(
    client: AsyncTestClient[Any], depth: int
) -> None:
    body = '{"email": "a@b.cc", "password": "password-1", "name": ' + "[" * depth + "]" * depth + "}"
    response = await client.post("/api/auth/register", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "VALIDATION")
