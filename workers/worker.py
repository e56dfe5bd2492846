"""`parley worker` (flow 5): event streams -> arq jobs -> embeddings and assistant replies.

One process runs three things:

1. a ``StreamConsumer`` (``infrastructure/redis/consumer.py``) in the shared consumer group
   ``assistant`` on every shard stream: any number of worker processes split the events. Each event
   is decoded and dispatched by type to the handlers in ``HANDLERS``; a handler enqueues arq jobs
   whose job id is derived from the event, so a re-delivered event queues nothing new. Entries are
   acked only after their jobs are queued (a handler that raises leaves the batch pending);
   entries a dead worker left pending are claimed by the others after ``claim_idle_ms``.
2. the arq worker (``workers/jobs.py``) running those jobs, with the embedding model loaded once.
3. a sweep that embeds messages older than ``sweep_after`` seconds that still have no vector
   (events trimmed from a stream, a worker outage, jobs lost with a Redis restart).

Adding an event handler (issue 9, assistant replies)::

    async def enqueue_reply(worker: Worker, event: events.Event) -> None:
        assert isinstance(event, events.MessagePosted)
        await worker.arq.enqueue_job("assistant_reply", str(event.message.id),
                                     _job_id=f"reply:{event.message.id}")

    HANDLERS["message_posted"].append(enqueue_reply)

Handlers get the ``Worker`` (``worker.services``, ``worker.arq``, ``worker.settings``) and the decoded
event. Same shape as the relay: ``run``/``stop``, SIGINT/SIGTERM, Prometheus metrics, backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker as _ArqWorker
from prometheus_client import Counter, start_http_server
from redis.exceptions import RedisError

from domain import events
from domain.errors import Unavailable
from infrastructure.bootstrap import Services, bootstrap
from infrastructure.embeddings.store import embed_messages, unembedded_page
from infrastructure.redis import keys, streams
from infrastructure.redis.consumer import StreamConsumer
from infrastructure.redis.streams import StreamEntry
from infrastructure.settings import Settings
from workers.assistant_trigger import on_message_posted
from workers.jobs import worker_options

log = logging.getLogger("parley.worker")

EventHandler = Callable[["Worker", events.Event], Awaitable[None]]

EVENTS = Counter("parley_worker_events_total", "Stream events seen by the worker", ["type"])
JOBS = Counter("parley_worker_jobs_enqueued_total", "arq jobs enqueued (not counting refused duplicates)", ["job"])
SWEPT = Counter("parley_worker_swept_total", "Messages embedded by the sweep (missed by the stream)")

#: An event delivered this often without being handled goes to the dead-letter stream. How long an
#: unacked event waits before another worker claims it, and the sweep's period and age threshold, are
#: settings (PARLEY_WORKER_CLAIM_IDLE_MS, EMBEDDINGS_SWEEP_SECONDS).
MAX_DELIVERIES = 5


class ArqWorker(_ArqWorker):
    """arq's worker, minus re-checking the jobs it is running itself. A running job stays in arq's queue
    until it ends, and every poll (each 50 ms) re-checks each queued job with a WATCH/EXISTS/ZSCORE
    round trip set: with 50 assistant answers streaming that was 3,000 Redis round trips a second and a
    seventh of the worker's CPU, competing with the answers' deltas."""

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        await super().start_jobs([job_id for job_id in job_ids if job_id.decode() not in self.tasks])


async def enqueue_embedding(worker: Worker, event: events.Event) -> None:
    """Every posted message gets its vector (semantic search and the assistant's retrieval)."""
    assert isinstance(event, events.MessagePosted)
    if not worker.embeddings_enabled:
        return
    message_id = event.message.id
    if await worker.arq.enqueue_job("embed_message", str(message_id), _job_id=keys.embed_job_id(message_id)):
        JOBS.labels("embed_message").inc()


async def enqueue_reply(worker: Worker, event: events.Event) -> None:
    """A person's message that asks the assistant something queues its answer (workers/assistant_trigger.py)."""
    assert isinstance(event, events.MessagePosted)
    if await on_message_posted(event, worker.services, worker.arq) is not None:
        JOBS.labels("generate_reply").inc()


#: Event type (``domain.events`` tag) -> handlers, run in order for each event of that type.
HANDLERS: dict[str, list[EventHandler]] = {"message_posted": [enqueue_embedding, enqueue_reply]}


class Worker:
    def __init__(
        self,
        services: Services,
        *,
        consumer_name: str | None = None,
        claim_idle_ms: int | None = None,
        sweep_every: float | None = None,
        sweep_after: float | None = None,
        handlers: dict[str, list[EventHandler]] | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.consumer_name = consumer_name or f"{socket.gethostname()}-{os.getpid()}"
        tuning = self.settings.embeddings
        self._claim_idle_ms = tuning.claim_idle_ms if claim_idle_ms is None else claim_idle_ms
        self._sweep_every = tuning.sweep_seconds if sweep_every is None else sweep_every
        self._sweep_after = tuning.sweep_seconds if sweep_after is None else sweep_after
        self._handlers = HANDLERS if handlers is None else handlers
        self._stopping = asyncio.Event()
        self._arq: ArqRedis | None = None
        #: False when no embedding provider works (EMBEDDINGS_PROVIDER=none, model missing): the worker
        #: still runs its other jobs; messages posted meanwhile are embedded later by backfill.
        self.embeddings_enabled = True

    @property
    def arq(self) -> ArqRedis:
        """The arq client handlers enqueue jobs with (available while ``run`` runs)."""
        assert self._arq is not None, "the worker is not running"
        return self._arq

    def stop(self) -> None:
        self._stopping.set()

    async def handle(self, entries: list[StreamEntry]) -> None:
        """The consumer's handler: dispatch every event, then the whole batch is acked (returning None
        means "all handled"); raising leaves the whole batch pending, to be retried."""
        for entry in entries:
            handlers = self._handlers.get(entry.event_type)
            EVENTS.labels(entry.event_type).inc()
            if not handlers:
                continue
            try:
                event = events.decode(entry.data)
            except ValueError:
                log.error("undecodable %s event %s: skipped", entry.event_type, entry.entry_id.decode())
                continue
            for handler in handlers:
                await handler(self, event)

    async def run(self) -> None:
        """Until ``stop``: load the model, then consume, run jobs and sweep; back off while Redis is down."""
        try:
            await self.services.embeddings.ready()  # load the model once, before any job
        except Unavailable as exc:
            self.embeddings_enabled = False
            log.warning("worker runs without embeddings: %s", exc.message)
        redis_settings = RedisSettings.from_dsn(self.settings.redis.url)
        self._arq = await create_pool(redis_settings, default_queue_name=keys.ARQ_QUEUE)
        arq_worker = ArqWorker(
            **worker_options(self.settings),
            redis_pool=self._arq,  # one arq pool per process, closed below whatever arq's close does
            handle_signals=False,
            ctx={"settings": self.settings, "services": self.services},
        )
        consumer = StreamConsumer(
            self.services.redis,
            group=keys.ASSISTANT_GROUP,
            consumer=self.consumer_name,
            streams=streams.all_streams(self.settings.redis.shard_count),
            handler=self.handle,
            start="$",
            claim_idle_ms=self._claim_idle_ms,
            max_deliveries=MAX_DELIVERIES,
        )
        tasks = [
            asyncio.create_task(arq_worker.main(), name="arq-worker"),
            asyncio.create_task(self._consume(consumer), name="stream-consumer"),
            asyncio.create_task(self._sweep_forever(), name="embedding-sweep"),
        ]
        log.info("worker %s consuming as group %s", self.consumer_name, keys.ASSISTANT_GROUP)
        try:
            await self._stopping.wait()
        finally:
            # The consumer and the sweep watch ``_stopping`` (a blocked read returns within a second);
            # cancelling a read mid-flight would lose its connection.
            await asyncio.wait(tasks[1:], timeout=10)
            await self._stop_arq(arq_worker, tasks[0])
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._arq.aclose(close_connection_pool=True)

    @staticmethod
    async def _stop_arq(arq_worker: ArqWorker, main_task: asyncio.Task[None]) -> None:
        """Take no new jobs, let running ones finish (10 s at most), then close arq's pool."""
        arq_worker.allow_pick_jobs = False
        running = [t for t in arq_worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=10)
        main_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await main_task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await arq_worker.close()

    async def _consume(self, consumer: StreamConsumer) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                await consumer.setup()
                await consumer.run(self._stopping)
                return
            except (RedisError, OSError) as exc:
                log.warning("worker consumer: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._sweep_every)
            if self._stopping.is_set():
                return
            try:
                await self.sweep()
            except (Unavailable, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("embedding sweep: %s", exc)

    async def sweep(self) -> int:
        """Embed messages older than ``sweep_after`` that still have no vector; returns how many."""
        if not self.embeddings_enabled:
            return 0
        total, after = 0, None
        batch = self.settings.embeddings.batch_size
        while not self._stopping.is_set():
            ids, after = await unembedded_page(
                self.services.pg, limit=batch, older_than_seconds=self._sweep_after, after=after
            )
            if not ids:
                break
            written = await embed_messages(self.services.pg, self.services.embeddings, ids)
            total += len(written)
        if total:
            SWEPT.inc(total)
            log.info("embedding sweep wrote %d vectors the stream did not bring", total)
        return total


async def main(settings: Settings | None = None, **options: Any) -> None:
    settings = settings or Settings.from_env()
    # arq logs two lines per job at INFO: thousands a second when busy. Its warnings still show.
    logging.getLogger("arq.worker").setLevel(max(logging.WARNING, logging.getLogger().level))
    if settings.server.metrics_port:
        start_http_server(settings.server.metrics_port)
    services = await bootstrap(settings)
    worker = Worker(services, **options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await services.close()
        log.info("worker stopped")
