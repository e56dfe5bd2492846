"""Coalesces concurrent embedding jobs into one model call per batch.

Each arq job embeds one message (its id is the job id, so a re-delivered event is not queued twice)
but the model is much cheaper per text in batches. Jobs ``submit`` their message id and wait; one
flusher task takes everything queued (up to ``batch_size``), embeds it with one model call, writes
the vectors and wakes the jobs. While the model works, new jobs queue up, so batches grow exactly
when the stream is busy and stay at one message (lowest latency) when it is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from uuid import UUID

import asyncpg
from prometheus_client import Counter, Histogram

from infrastructure.embeddings.provider import Embedder
from infrastructure.embeddings.store import embed_messages

log = logging.getLogger("parley.embeddings.batcher")

EMBEDDED = Counter("parley_embeddings_written_total", "Message vectors written to the database")
BATCH_SIZE = Histogram(
    "parley_embedding_batch_size", "Messages per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_SECONDS = Histogram("parley_embedding_batch_seconds", "Read + embed + write time of one batch")


class EmbedBatcher:
    def __init__(self, pg: asyncpg.Pool, embedder: Embedder, *, batch_size: int = 64) -> None:
        self._pg = pg
        self._embedder = embedder
        self._batch_size = batch_size
        self._queue: asyncio.Queue[tuple[UUID, asyncio.Future[bool]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="embed-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, message_id: UUID) -> bool:
        """Wait until the message is embedded; True when this call wrote its vector (False: it had
        one already, or no longer exists). Raises what the batch raised (arq then retries the job)."""
        self.start()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((message_id, future))
        return await future

    async def _flush_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[UUID, asyncio.Future[bool]]]) -> None:
        started = time.perf_counter()
        ids = list(dict.fromkeys(mid for mid, _ in batch))
        try:
            written = await embed_messages(self._pg, self._embedder, ids)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        EMBEDDED.inc(len(written))
        BATCH_SIZE.observe(len(ids))
        BATCH_SECONDS.observe(time.perf_counter() - started)
        for mid, future in batch:
            if not future.done():
                future.set_result(mid in written)
                written.discard(mid)
