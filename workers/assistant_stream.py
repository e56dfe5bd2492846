"""One answer's provider stream -> the reply streams, with natural batching and cancel.

Three tasks per answer: the *reader* takes items from the provider as fast as they come; the *writer*
appends whatever deltas are waiting to the reply streams in one Redis round trip (one delta when the
worker keeps up, several when it is behind: batching costs no latency when idle and saves round trips
under load); the *watcher* checks for a cancel while nothing is written (the writer's round trip
already reports one). A cancel stops the reader, which closes the provider stream and its connection.

``Outcome.parts`` holds what was written (what clients were shown), which is what a cancelled answer
stores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from domain.assistant import ReplyStatus
from infrastructure.llm.base import Finished, LLMError, StreamItem, TextDelta
from infrastructure.redis import replies
from infrastructure.redis.replies import ReplyWriter

#: How often a reply checks for a cancel while no delta is being written.
CANCEL_POLL_SECONDS = 0.2


@dataclass
class Outcome:
    parts: list[str] = field(default_factory=list)
    finished: Finished | None = None
    cancelled: bool = False
    error: LLMError | None = None
    first_token_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def status(self) -> ReplyStatus:
        if self.cancelled:
            return ReplyStatus.CANCELLED
        return ReplyStatus.ERROR if self.error is not None or self.finished is None else ReplyStatus.DONE


class ReplyPump:
    def __init__(self, items: AsyncGenerator[StreamItem, None], writer: ReplyWriter) -> None:
        self._items = items
        self._writer = writer
        self._pending: list[str] = []
        self._ready = asyncio.Event()
        self._last_write = time.monotonic()
        self.out = Outcome()

    async def run(self) -> Outcome:
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write(reader))
        watcher = asyncio.create_task(self._watch(reader))
        try:
            await asyncio.wait({reader})
            if not reader.cancelled() and (exc := reader.exception()) is not None:
                if not isinstance(exc, LLMError):
                    raise exc
                self.out.error = exc
            self._ready.set()
            await writer  # what was read is written, unless a cancel stopped it
        finally:
            tasks = (watcher, writer, reader)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # their errors were handled above
            await self._items.aclose()  # closes the provider's connection if it is still open
        return self.out

    async def _read(self) -> None:
        async for item in self._items:
            if isinstance(item, TextDelta):
                if item.text:
                    if self.out.first_token_at is None:
                        self.out.first_token_at = time.monotonic()
                    self._pending.append(item.text)
                    self._ready.set()
            else:
                self.out.finished = item

    async def _write(self, reader: asyncio.Task[None]) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                cancelled = await self._writer.deltas(batch)
                self._last_write = time.monotonic()
                self.out.parts.extend(batch)
                if cancelled:
                    self._stop(reader)
                    return
            if reader.done():
                return

    async def _watch(self, reader: asyncio.Task[None]) -> None:
        while not reader.done():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if time.monotonic() - self._last_write < CANCEL_POLL_SECONDS:
                continue  # the writer's own round trips are checking
            if await replies.cancel_requested(self._writer.redis, self._writer.reply_id):
                self._stop(reader)
                self._ready.set()
                return

    def _stop(self, reader: asyncio.Task[None]) -> None:
        self.out.cancelled = True
        self._pending.clear()
        reader.cancel()
