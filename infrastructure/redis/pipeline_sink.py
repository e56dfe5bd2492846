"""Many tasks' small Redis pipelines merged into one round trip: natural batching across tasks.

The worker streams many answers at once and each delta is a few commands. Sent one pipeline per delta,
each costs a round trip plus redis-py's per-call connection checkout (a non-blocking read syscall to
check the connection), which made up most of the worker's CPU per delta. Here whatever the tasks
submitted while the previous round trip was in flight goes out together: one delta alone when the
worker keeps up (no added delay), dozens per round trip when it is busy. Each task still waits for its
own results, so per-task order is kept (a reply's writer submits its next deltas only after the last).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

#: Adds a task's commands to the shared pipeline.
Build = Callable[[Any], None]


class PipelineSink:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiting: list[tuple[Build, asyncio.Future[list[Any]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def execute(self, build: Build) -> list[Any]:
        """Run ``build``'s commands in the next shared round trip; their results, in order. A command
        that failed comes back as its exception (as with ``execute(raise_on_error=False)``)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((build, future))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._waiting = self._waiting, []
            try:
                await self._flush(batch)
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else ConnectionError("sink closed"))
                if not isinstance(exc, Exception):
                    raise

    async def _flush(self, batch: list[tuple[Build, asyncio.Future[list[Any]]]]) -> None:
        if not batch:
            return
        pipe: Any = self._redis.pipeline(transaction=False)
        sizes = []
        for build, _ in batch:
            before = len(pipe.command_stack)
            build(pipe)
            sizes.append(len(pipe.command_stack) - before)
        results = await pipe.execute(raise_on_error=False)
        start = 0
        for (_, future), size in zip(batch, sizes, strict=True):
            if not future.done():  # its task may have been cancelled meanwhile
                future.set_result(results[start : start + size])
            start += size
