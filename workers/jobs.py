"""arq job functions and worker settings of `parley worker` (flow 5).

Jobs are enqueued by the stream consumer in ``workers/worker.py`` (one job per triggering event,
job id derived from it) and run by the arq worker that the same process runs. Shared, long-lived
clients live in arq's ``ctx``, built once per process by ``on_startup``:

    ctx["settings"]       Settings
    ctx["services"]       infrastructure.bootstrap.Services (asyncpg pool ``pg``, SQLAlchemy ``engine``,
                          ``redis``, ``embeddings`` = the process's loaded Embedder, ``uow()``, ...)
    ctx["embed_batcher"]  EmbedBatcher: many embedding jobs -> one model call

Adding a job (e.g. the assistant's reply): write ``async def my_job(ctx, ...)``, append it to
``JOB_FUNCTIONS``, and enqueue it from a handler in ``workers/worker.py`` with a ``_job_id``
derived from the trigger (arq may run a job twice after ``kill -9``; the id stops double queueing,
the job itself must still write idempotently). ``WorkerSettings`` also works with arq's own CLI
(``arq workers.jobs.WorkerSettings``, Redis from ``REDIS_URL``), though ``parley worker`` is the
supported way: it runs this and the stream consumer in one process.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from arq.connections import RedisSettings

from infrastructure.bootstrap import bootstrap
from infrastructure.embeddings.batcher import EmbedBatcher
from infrastructure.redis import keys
from infrastructure.settings import LLMSettings, Settings
from workers import assistant
from workers.assistant_trigger import reply_job

log = logging.getLogger("parley.jobs")

#: A result (and so the job id) is kept this long: the window in which a re-delivered event is
#: refused by arq itself. Past it the ``embedding IS NULL`` guard still stops a second write.
KEEP_RESULT_SECONDS = 600
#: A job not finished in this time is cancelled and retried (model calls take well under a second).
#: Kept short: after a crash (kill -9) arq retries a job only once the longest job timeout + 10 s
#: has passed, and an assistant answer cut off by the crash waits for that retry.
JOB_TIMEOUT_SECONDS = 30


async def embed_message(ctx: dict[str, Any], message_id: str) -> bool:
    """Embed one message (batched with whatever else is queued). True when this job wrote the vector."""
    batcher: EmbedBatcher = ctx["embed_batcher"]
    return await batcher.submit(UUID(message_id))


async def on_startup(ctx: dict[str, Any]) -> None:
    """Build shared clients once per process. ``parley worker`` passes its own ``services`` in ctx."""
    if "settings" not in ctx:
        ctx["settings"] = Settings.from_env()
    if "services" not in ctx:
        ctx["services"] = await bootstrap(ctx["settings"])
        ctx["owns_services"] = True
    services = ctx["services"]
    batcher = EmbedBatcher(services.pg, services.embeddings, batch_size=ctx["settings"].embeddings.batch_size)
    batcher.start()
    ctx["embed_batcher"] = batcher
    await assistant.setup(ctx, services)


async def on_shutdown(ctx: dict[str, Any]) -> None:
    batcher: EmbedBatcher | None = ctx.get("embed_batcher")
    if batcher is not None:
        await batcher.stop()
    await assistant.teardown(ctx)
    if ctx.get("owns_services"):
        await ctx["services"].close()


#: Every job function the worker runs. Issue-9's assistant reply job is appended here.
JOB_FUNCTIONS: list[Any] = [embed_message]


def worker_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``arq.worker.Worker`` (``parley worker`` adds ``ctx`` and signals)."""
    return {
        # The assistant's reply job takes its timeout from the LLM settings (workers/assistant_trigger.py).
        "functions": [*JOB_FUNCTIONS, reply_job(settings.llm)],
        "queue_name": keys.ARQ_QUEUE,
        "redis_settings": RedisSettings.from_dsn(settings.redis.url),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        # Room for a full embedding batch to gather while the previous one is in the model.
        "max_jobs": max(2 * settings.embeddings.batch_size, 32),
        "job_timeout": JOB_TIMEOUT_SECONDS,
        "keep_result": KEEP_RESULT_SECONDS,
        "poll_delay": 0.05,
        "max_tries": 5,
        "log_results": False,
    }


class WorkerSettings:
    """For ``arq workers.jobs.WorkerSettings``; ``parley worker`` uses ``worker_options`` instead."""

    functions = [*JOB_FUNCTIONS, reply_job(LLMSettings())]  # the reply job's timeout from the defaults
    queue_name = keys.ARQ_QUEUE
    on_startup = on_startup
    on_shutdown = on_shutdown
    max_jobs = 128
    job_timeout = JOB_TIMEOUT_SECONDS
    keep_result = KEEP_RESULT_SECONDS
    poll_delay = 0.05
