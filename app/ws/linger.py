"""A task that drains a socket's queue waits a moment for more before it ends.

An idle socket keeps no writer and no handler task (at 10,000 idle sockets a node that is most of
them), so work on a socket starts a task when it arrives. On a busy socket that meant a task per
burst: a room of ten with a message every few hundred milliseconds created and finished a writer task
for every frame, measured at about a tenth of a node's samples at 500 msg/s. A task that drained its
queue now waits up to ``LINGER_SECONDS`` for more work first, so a busy socket keeps one task and an
idle one still ends with none.

The wait is one future per wait, and its end a timer armed at most once per linger period (re-armed
lazily when it fires early), not a timeout per wait: ``asyncio.timeout`` costs ~9 µs here, paid for
every frame of a busy socket.
"""

from __future__ import annotations

import asyncio

#: How long a drained task waits for more before it ends. Long against the gaps between a busy
#: socket's frames, short against how long a socket stays idle.
LINGER_SECONDS = 2.0


class Linger:
    """``wait`` in the task with nothing left to do; ``poke`` from whoever queues work for it."""

    __slots__ = ("_idle_since", "_seconds", "_timer", "_waiter")

    def __init__(self, seconds: float = LINGER_SECONDS) -> None:
        self._seconds = seconds
        self._waiter: asyncio.Future[bool] | None = None
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def wait(self) -> bool:
        """True once poked, False after the linger with nothing new (the task should end)."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._idle_since = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._idle_since + self._seconds, self._expire)
        try:
            poked: bool = await waiter
            return poked
        finally:
            self._waiter = None

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # busy: the next wait arms the timer again
        due = self._idle_since + self._seconds
        loop = asyncio.get_running_loop()
        if loop.time() >= due:
            waiter.set_result(False)
        else:  # this wait began after the timer was armed
            self._timer = loop.call_at(due, self._expire)
