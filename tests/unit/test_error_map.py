"""A dependency outage is 503 UNAVAILABLE with Retry-After, never a 500."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar.testing import RequestFactory
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from app.errors import RETRY_AFTER_UNAVAILABLE, handle_exception


def _answer(exc: Exception) -> tuple[int, dict[str, object], dict[str, str]]:
    response = handle_exception(RequestFactory().get("/api/me"), exc)
    body = msgspec.json.decode(msgspec.json.encode(response.content))
    return response.status_code, body, dict(response.headers)


def test_unreachable_postgres_or_redis_is_503_with_retry_after() -> None:
    wrapped = OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused"))
    for exc in (ConnectionRefusedError(111, "refused"), RedisConnectionError("down"), wrapped,
                asyncpg.exceptions.CannotConnectNowError("starting up")):  # fmt: skip
        status, body, headers = _answer(exc)
        assert status == 503, exc
        assert body["error"]["code"] == "UNAVAILABLE" and "retry" in body["error"]["message"]  # type: ignore[index]
        assert headers.get("Retry-After") == str(RETRY_AFTER_UNAVAILABLE)


def test_a_bug_is_still_a_500_with_a_ref() -> None:
    status, body, _ = _answer(KeyError("bug"))
    assert status == 500 and body["error"]["code"] == "INTERNAL" and body["error"]["ref"]  # type: ignore[index]
