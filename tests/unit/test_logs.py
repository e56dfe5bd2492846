"""One log format: plain or JSON lines, the context ids on every line, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from infrastructure import logs
from infrastructure.settings import LogSettings, SettingsError

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    yield out
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_lines_carry_the_request_and_connection_ids(stream: io.StringIO) -> None:
    logs.configure("INFO", "json", stream)
    token = logs.request_id.set("req-1")
    logging.getLogger("parley.test").info("handled %s", "it")
    logs.request_id.reset(token)
    token = logs.connection_id.set("conn-1")
    logging.getLogger("parley.test").warning("socket line")
    logs.connection_id.reset(token)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "handled it" and first["request_id"] == "req-1" and "connection_id" not in first
    assert second["level"] == "WARNING" and second["connection_id"] == "conn-1"
    assert set(first) >= {"ts", "level", "logger", "msg"}


def test_plain_lines_are_one_readable_line_with_the_ids(stream: io.StringIO) -> None:
    logs.configure("INFO", "plain", stream)
    token = logs.request_id.set("req-2")
    logging.getLogger("parley.test").info("hello")
    logs.request_id.reset(token)
    line = stream.getvalue().strip()
    assert "INFO" in line and "parley.test hello" in line and line.endswith("request_id=req-2")


def test_level_comes_from_the_settings(stream: io.StringIO) -> None:
    logs.configure(LogSettings.from_env({"PARLEY_LOG_LEVEL": "warning"}).level, "plain", stream)
    logging.getLogger("parley.test").info("quiet")
    logging.getLogger("parley.test").error("loud")
    assert "quiet" not in stream.getvalue() and "loud" in stream.getvalue()
    with pytest.raises(SettingsError):
        LogSettings.from_env({"PARLEY_LOG_FORMAT": "xml"})


def test_credentials_never_reach_the_output_in_either_format(stream: io.StringIO) -> None:
    for fmt in logs.FORMATS:
        logs.configure("INFO", fmt, stream)
        logging.getLogger("parley.test").info('"GET /ws?ticket=T1cket-secret&x=1" Authorization: Bearer %s', JWT)
        logging.getLogger("parley.test").info("refresh_token=r3fresh password=hunter22 %s", JWT)
    text = stream.getvalue()
    for secret in ("T1cket-secret", JWT, "r3fresh", "hunter22"):
        assert secret not in text
    assert text.count("[REDACTED]") >= 8
    assert all(json.loads(line) for line in text.splitlines() if line.startswith("{"))
