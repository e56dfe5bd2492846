"""The one exception map: every error leaves as ``{"error": {"code", "message", "details"}}``.

Domain errors carry their code; Litestar's own (validation, 404 route, 405, 413) are translated;
PostgreSQL or Redis unreachable is a 503 ``UNAVAILABLE`` with ``Retry-After`` (nothing was changed:
the transaction did not commit); anything else is a 500 with no detail (the traceback goes to the log
with a reference). The OpenAPI document states these per operation (``app/openapi.py``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError

from domain.errors import DomainError, RateLimited

log = logging.getLogger("parley.errors")

STATUS_BY_CODE = {
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "VALIDATION": 400,
    "CONFLICT": 409,
    "TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}

CODE_BY_STATUS = {
    400: "VALIDATION",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "TOO_LARGE",
    415: "VALIDATION",
    422: "VALIDATION",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    details: Any = None
    ref: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


def error_response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response[ErrorEnvelope]:
    return Response(ErrorEnvelope(error=body), status_code=status, headers=headers, media_type="application/json")


def _validation_details(exc: ValidationException) -> Any:
    extra = exc.extra
    if isinstance(extra, list):
        return [{k: v for k, v in item.items() if k in {"key", "message", "source"}} for item in extra]
    return extra or None


#: Raised when PostgreSQL or Redis cannot be reached or drops the connection: a 503, never a 500.
OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and socket timeouts
    TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
)


def is_outage(exc: BaseException) -> bool:
    """A dependency is down; SQLAlchemy wraps the driver's error, so its cause is looked at too."""
    if isinstance(exc, OUTAGES):
        return True
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc.orig, OUTAGES)):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_outage(cause)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorEnvelope]:
    if isinstance(exc, DomainError):
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, round(exc.retry_after + 0.4999)))}
        return error_response(STATUS_BY_CODE[exc.code], ErrorBody(exc.code, exc.message, exc.details), headers)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code = CODE_BY_STATUS.get(exc.status_code, "VALIDATION")
        details = _validation_details(exc) if isinstance(exc, ValidationException) else None
        message = exc.detail if exc.detail else "bad request"
        if code == "TOO_LARGE":
            message = "request body is too large"
        return error_response(exc.status_code, ErrorBody(code, message, details), exc.headers)
    if isinstance(exc, HTTPException) and exc.status_code == 503:
        return error_response(503, ErrorBody("UNAVAILABLE", exc.detail or "service unavailable"))
    if is_outage(exc):
        log.warning("%s %s: dependency unavailable: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error_response(
            503, ErrorBody("UNAVAILABLE", "a backing service is unavailable; retry later"), {"Retry-After": "1"}
        )
    ref = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, ErrorBody("INTERNAL", "internal error; quote ref when reporting it", ref=ref)
    )
