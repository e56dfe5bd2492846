"""Flow 3, under the app: uvicorn's WebSocket protocol (one object per socket), trimmed for idle sockets.

A node holds thousands of sockets that send nothing for minutes, so what one costs at rest is the
node's memory (``bench/connections.py``). uvicorn's sans-I/O protocol (``websockets-sansio``, its
default with the websockets library) keeps, for the whole life of every socket, three things only the
first moments or the busy ones need:

- the handshake's request and response (``request``, ``response``), kept after the 101 went out.
  Dropped once the handshake is over (``start_keepalive`` is called exactly then). The request
  itself lives on in the websockets library's parser, which keeps it for the connection's life; the
  response and its headers go.
- an ``asyncio.Queue`` for the frames read and not yet received by the app: three deques and an
  ``asyncio.Event`` with a fourth, ~0.7 KiB each, whether or not a frame ever waits in them.
  ``_Received`` does what the protocol asks of it (``put_nowait``, ``get``, ``empty``) with a list,
  which holds no storage while empty. uvicorn pauses reading after each frame until the app has taken
  everything queued, so the list holds one or two events at a time.
- ``writable``, an ``asyncio.Event`` (a deque) that every send waits on while the transport's buffer
  is full. ``_Flag`` keeps its waiters only while there are any.

Measured with ``tracemalloc`` in a node holding 1,000 idle sockets: 3.6 KiB fewer Python objects per
socket (29.5 -> 25.9 KiB); at 20,000 sockets on two nodes, 5.3-5.7 KiB less RSS per socket than with
uvicorn's own protocol, and 0.5 ms less CPU per connect (3.16 against 3.66 ms, one run).

Everything else is uvicorn's (the handshake, frames, pings, closes), so the class stays small; it
relies on those three attribute names, which ``tests/unit/test_server_protocol.py`` checks against
the installed uvicorn (pinned by ``requirements/lock.txt``). ``parley api`` passes it as uvicorn's
``ws`` protocol (``app/cli.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

#: The import string ``parley api`` gives uvicorn (``ws=``): uvicorn imports the class itself.
IMPORT_STRING = "app.ws.server_protocol:LeanWebSocketProtocol"


class _Received:
    """The protocol's queue of received events: one reader at a time (the app's ``receive``)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("the socket is already being read by another task")
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """``asyncio.Event``'s set / clear / wait, holding a list of waiters only while there are any."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol without what an idle socket does not need."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Received()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self.writable.set()

    def start_keepalive(self) -> None:
        # Called once, right after the handshake's 101 response was written: it is over.
        super().start_keepalive()
        self.request = self.response = None  # type: ignore[assignment]
