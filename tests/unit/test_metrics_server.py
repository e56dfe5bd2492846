"""Roles without HTTP serve /metrics and /health/live on their own port."""

from __future__ import annotations

import socket

import httpx
from prometheus_client import Counter

from infrastructure.embedded import free_port
from infrastructure.metrics_server import DEFAULT_PORTS, metrics_port, start_metrics_server
from infrastructure.settings import ServerSettings, Settings

PROBE = Counter("parley_test_metrics_server_probe", "Only for tests/unit/test_metrics_server.py")


def _settings(port: int) -> Settings:
    return Settings(server=ServerSettings(metrics_port=port))


def test_serves_metrics_and_liveness_on_its_port() -> None:
    PROBE.inc()
    server = start_metrics_server(_settings(free_port()), "relay", host="127.0.0.1")
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert "parley_test_metrics_server_probe_total 1.0" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/health/live").json() == {"status": "ok", "role": "relay"}
        assert httpx.get(f"{base}/elsewhere").status_code == 404
    finally:
        server.close()


def test_each_role_has_its_own_default_port_and_zero_disables() -> None:
    assert len(set(DEFAULT_PORTS.values())) == len(DEFAULT_PORTS)
    assert metrics_port(Settings(), "relay") == 9101
    assert start_metrics_server(_settings(0), "relay") is None


def test_a_taken_port_is_reported_not_fatal() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert start_metrics_server(_settings(taken.getsockname()[1]), "relay", host="127.0.0.1") is None
