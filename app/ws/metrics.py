"""WebSocket metrics of this node (``GET /metrics``): sockets open, frames in by type, frames out, error
frames, closes by code, slow clients cut off, presence announcements, and the ack and delivery latencies
of the hot path."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Latency buckets (seconds) for acks and deliveries: from a quiet node's milliseconds to overload.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Set by the hub as sockets register and leave.
CONNECTIONS = Gauge("parley_ws_connections", "WebSockets open on this node")
FRAMES_IN = Counter("parley_ws_frames_in_total", "Client frames received, by type (invalid: not understood)", ["type"])
FRAMES_OUT = Counter("parley_ws_frames_out_total", "Frames sent to clients")
ERRORS = Counter("parley_ws_errors_total", "Error frames sent, by code", ["code"])
#: Counted by the access log (app/access_log.py), which sees every socket end, whichever side closed it.
CLOSES = Counter("parley_ws_closes_total", "WebSockets closed, by close code (either side)", ["code"])
SLOW_CLIENTS = Counter(
    "parley_ws_slow_clients_closed_total", "Sockets closed with 1013 because the client could not keep up"
)
ACK_SECONDS = Histogram(
    "parley_ws_ack_seconds", "From a WebSocket send frame read to its ack queued", buckets=LATENCY_BUCKETS
)
#: The node's presence announcer (app/ws/presence_announcer.py): announcements are queued by sockets
#: and published in batches; none is lost without being counted here and logged.
PRESENCE_PUBLISHED = Counter(
    "parley_ws_presence_published_total", "Presence signals published by this node, by status", ["status"]
)
PRESENCE_FAILED = Counter(
    "parley_ws_presence_failed_total",
    "Presence announcements lost because a batch failed, by the step that failed (postgres, redis)",
    ["step"],
)
PRESENCE_DROPPED = Counter(
    "parley_ws_presence_dropped_total", "Presence announcements dropped, oldest first, because the queue was full"
)
PRESENCE_BATCH_USERS = Histogram(
    "parley_ws_presence_batch_users",
    "Users per presence batch (one PostgreSQL query and one Redis pipeline each)",
    buckets=(1, 10, 100, 1000, 10_000),
)
DELIVERY_SECONDS = Histogram(
    "parley_delivery_seconds",
    "From a message's commit to this node reading it off the stream (outbox, relay, Redis)",
    buckets=LATENCY_BUCKETS,
)
