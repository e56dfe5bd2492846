"""Metrics of the API/WebSocket role, beside the HTTP ones Litestar's Prometheus middleware exports
(``parley_requests_total``, ``parley_request_duration_seconds``). Served on the API's own ``/metrics``.

Connections and closes are counted by ``app/access_log.py`` (it sees every socket open and close),
ack latency by the gateway, delivery latency by the node's fan-out.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Latency buckets (seconds) for acks and deliveries: from a quiet node's milliseconds to overload.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WS_CONNECTIONS = Gauge("parley_ws_connections", "WebSocket connections open on this node")
WS_CLOSED = Counter("parley_ws_closes_total", "WebSocket connections closed, by close code", ["code"])
WS_SLOW_CLIENT_DISCONNECTS = Counter(
    "parley_ws_slow_clients_closed_total", "Sockets closed with 1013 because the client could not keep up"
)
WS_ACK_SECONDS = Histogram(
    "parley_ws_ack_seconds", "From a WebSocket send frame read to its ack queued", buckets=LATENCY_BUCKETS
)
DELIVERY_SECONDS = Histogram(
    "parley_delivery_seconds",
    "From a message's commit to this node reading it off the stream (outbox, relay, Redis)",
    buckets=LATENCY_BUCKETS,
)
