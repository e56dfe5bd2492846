"""A task that drains a socket's queue waits a moment for more before it ends.

An idle socket keeps no writer and no handler task (at 10,000 idle sockets a node that is most of
them), so work on a socket starts a task when it arrives. On a busy socket that meant a task per
burst: a room of ten with a message every few hundred milliseconds created and finished a writer task
for every frame, measured at about a tenth of a node's samples at 500 msg/s. A task that drained its
queue now waits up to ``LINGER_SECONDS`` for more work first, so a busy socket keeps one task and an
idle one still ends with none.
"""

from __future__ import annotations

import asyncio

#: How long a drained task waits for more before it ends. Long against the gaps between a busy
#: socket's frames, short against how long a socket stays idle.
LINGER_SECONDS = 2.0


class Linger:
    """``wait`` in the task with nothing left to do; ``poke`` from whoever queues work for it."""

    __slots__ = ("_seconds", "_waiter")

    def __init__(self, seconds: float = LINGER_SECONDS) -> None:
        self._seconds = seconds
        self._waiter: asyncio.Future[None] | None = None

    def poke(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Return once poked or after the linger; the caller then looks at its queue again."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._seconds):
                await self._waiter
        except TimeoutError:
            pass
        finally:
            self._waiter = None
