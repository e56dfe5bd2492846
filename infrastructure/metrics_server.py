"""``/metrics`` and ``/health/live`` for roles that serve no HTTP of their own (relay, projector, worker).

Every role serves metrics by default, each on its own port so they can share a machine (``parley
dev``): ``DEFAULT_PORTS``; ``PARLEY_METRICS_PORT`` overrides it, 0 turns it off. The server runs in a
daemon thread (prometheus_client's registry is thread-safe), so a busy event loop does not delay a
scrape. A port already taken is logged and skipped: metrics are not worth stopping a relay for.

A role calls ``start_metrics_server(settings, "relay")`` once at start and ``close()`` on the way out.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

from infrastructure.settings import Settings

log = logging.getLogger("parley.metrics")

#: Default metrics port per role (the API serves /metrics on its HTTP port instead).
DEFAULT_PORTS = {"relay": 9101, "projector": 9102, "worker": 9103}

StartResponse = Callable[..., Any]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s are not news
        pass


def _app(role: str) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/health/live":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"ok","role":"' + role.encode() + b'"}']
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics or /health/live\n"]

    return app


class MetricsServer:
    def __init__(self, server: _Server, role: str) -> None:
        self.server = server
        self.role = role
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name=f"metrics-{role}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def metrics_port(settings: Settings, role: str) -> int:
    port = settings.server.metrics_port
    return DEFAULT_PORTS[role] if port < 0 else port


def start_metrics_server(settings: Settings, role: str, *, host: str = "0.0.0.0") -> MetricsServer | None:
    """Serve ``/metrics`` and ``/health/live`` for ``role``; None when disabled or the port is taken."""
    port = metrics_port(settings, role)
    if port == 0:
        return None
    try:
        server = make_server(host, port, _app(role), server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        log.error("%s: cannot serve /metrics on port %d (%s); running without it", role, port, exc)
        return None
    log.info("%s: /metrics and /health/live on port %d", role, port)
    return MetricsServer(server, role)
