"""The one exception map: every error leaves as ``{"error": {"code", "message", "details"}}``.

Domain errors carry their code; Litestar's own (validation, 404 route, 405, 413) are translated;
a dependency that cannot be reached (PostgreSQL down or restarting, Redis where it is still needed)
is a 503 ``UNAVAILABLE`` with ``Retry-After``, logged as one warning line (nothing was changed: the
transaction did not commit); JSON nested too deeply for the decoder is a 400 ``VALIDATION``; anything
else is a 500 with no detail (the traceback goes to the log with a reference). The OpenAPI document
states these per operation (``app/openapi.py``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import msgspec
import sqlalchemy.exc
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from domain.errors import DomainError, RateLimited, Unavailable

log = logging.getLogger("parley.errors")

#: Seconds a client is told to wait before retrying when a dependency is down.
RETRY_AFTER_UNAVAILABLE = 2

# Errors that mean "could not talk to PostgreSQL (or Redis)", not "the request was wrong": a refused
# or broken connection, a server shutting down or starting up, a pool that timed out.
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, socket errors
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # admin_shutdown, crash_shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # too_many_connections
    asyncpg.exceptions.InternalClientError,  # a pooled connection left mid-operation when the server went away
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    Unavailable,
)


def is_unavailable(exc: BaseException) -> bool:
    """A dependency could not be reached (the request may be retried as is), along the cause chain."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, _UNAVAILABLE_TYPES):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if type(seen).__module__.startswith("redis") and type(seen).__name__ in {"ConnectionError", "TimeoutError"}:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class QuietInvalidUtf8(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 text frame with a full traceback at ERROR; it is the
    client's fault and is answered with close 1007, so it becomes one line at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Invalid UTF-8 sequence"):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "invalid UTF-8 in a client's text frame; closed with 1007",
                (),
                None,
                None,
            )
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def quiet_client_faults() -> None:
    """Install the filters above (idempotent); called when the app is built."""
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietInvalidUtf8) for f in server_log.filters):
        server_log.addFilter(QuietInvalidUtf8())


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


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorEnvelope]:
    if isinstance(exc, DomainError):
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, round(exc.retry_after + 0.4999)))}
        elif isinstance(exc, Unavailable):
            headers = _retry_after()
        return error_response(STATUS_BY_CODE[exc.code], ErrorBody(exc.code, exc.message, exc.details), headers)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code = CODE_BY_STATUS.get(exc.status_code, "VALIDATION")
        details = _validation_details(exc) if isinstance(exc, ValidationException) else None
        message = exc.detail if exc.detail else "bad request"
        if code == "TOO_LARGE":
            message = "request body is too large"
        return error_response(exc.status_code, ErrorBody(code, message, details), exc.headers)
    if isinstance(exc, HTTPException) and exc.status_code == 503:
        return error_response(503, ErrorBody("UNAVAILABLE", exc.detail or "service unavailable"), _retry_after())
    if isinstance(exc, RecursionError):  # msgspec's answer to JSON nested thousands of levels deep
        return error_response(400, ErrorBody("VALIDATION", "request body is nested too deeply"))
    if is_unavailable(exc):
        log.warning("%s %s: dependency unavailable: %r", request.method, request.url.path, exc)
        message = "a dependency is unreachable; retry (a post with the same client_msg_id is safe)"
        return error_response(503, ErrorBody("UNAVAILABLE", message), _retry_after())
    ref = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, ErrorBody("INTERNAL", "internal error; quote ref when reporting it", ref=ref)
    )


def _retry_after() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}
