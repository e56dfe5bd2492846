"""WebSocket traffic metrics of this node (``GET /metrics``): sockets open, frames in by type, frames out,
error frames and closes by code."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("parley_ws_connections", "WebSockets open on this node")
FRAMES_IN = Counter("parley_ws_frames_in_total", "Client frames received, by type (invalid: not understood)", ["type"])
FRAMES_OUT = Counter("parley_ws_frames_out_total", "Frames sent to clients")
ERRORS = Counter("parley_ws_errors_total", "Error frames sent, by code", ["code"])
CLOSES = Counter("parley_ws_closes_total", "Sockets closed by the server, by close code", ["code"])
