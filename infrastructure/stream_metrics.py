"""Prometheus gauges for streams, consumer groups, dead letters, the outbox and the projector's lag, set
from the operators' stream report. Every API node samples the report on its maintenance tick, so
``GET /metrics`` on any node shows them (roles without HTTP expose their own counters on
``PARLEY_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import Gauge

from infrastructure.streams_report import StreamReport

STREAM_LENGTH = Gauge("parley_stream_length", "Entries in a shard stream", ["stream"])
GROUP_LAG = Gauge("parley_stream_group_lag", "Entries not yet delivered to a consumer group", ["stream", "group"])
GROUP_PENDING = Gauge("parley_stream_group_pending", "Entries delivered, not acknowledged", ["stream", "group"])
GROUP_OLDEST_PENDING = Gauge(
    "parley_stream_group_oldest_pending_seconds", "Age of a group's oldest pending entry (all shards)", ["group"]
)
GROUP_BEHIND = Gauge(
    "parley_stream_group_behind_seconds", "Age of a group's oldest unacknowledged entry (all shards)", ["group"]
)
GROUP_CONSUMERS = Gauge("parley_stream_group_consumers", "Consumers in a group", ["group"])
DEAD_LETTERS = Gauge("parley_stream_dead_letter_entries", "Entries in the dead-letter stream")
BACKLOG = Gauge("parley_outbox_backlog", "Outbox rows not yet published")
BACKLOG_AGE = Gauge("parley_outbox_oldest_seconds", "Age of the oldest unpublished outbox row")
PROJECTION_LAG = Gauge("parley_projection_lag_seconds", "How far the read models are behind the streams")
PROJECTOR_PENDING = Gauge("parley_projector_group_pending", "Entries the projector group has not acknowledged")
PROJECTOR_LAG = Gauge("parley_projector_group_lag", "Entries not yet delivered to the projector group")

_LABELLED = (STREAM_LENGTH, GROUP_LAG, GROUP_PENDING, GROUP_OLDEST_PENDING, GROUP_BEHIND, GROUP_CONSUMERS)


def observe(report: StreamReport) -> None:
    """Replace every gauge's values with this report's (groups of dead nodes disappear)."""
    for gauge in _LABELLED:
        gauge.clear()
    for info in report.streams:
        STREAM_LENGTH.labels(info.stream).set(info.length)
        for group in info.groups:
            GROUP_LAG.labels(info.stream, group.name).set(-1 if group.lag is None else group.lag)
            GROUP_PENDING.labels(info.stream, group.name).set(group.pending)
    for summary in report.groups:
        GROUP_OLDEST_PENDING.labels(summary.name).set(summary.oldest_pending_age_seconds)
        GROUP_BEHIND.labels(summary.name).set(summary.projection_lag_seconds)
        GROUP_CONSUMERS.labels(summary.name).set(len(summary.consumers))
    DEAD_LETTERS.set(report.dead_letters)
    BACKLOG.set(report.outbox_backlog)
    BACKLOG_AGE.set(report.outbox_oldest_age_seconds)
    projector = report.projector
    PROJECTION_LAG.set(projector.projection_lag_seconds if projector else 0)
    PROJECTOR_PENDING.set(projector.pending if projector else 0)
    PROJECTOR_LAG.set(projector.lag or 0 if projector else 0)
