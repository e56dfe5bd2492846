"""A local HTTP server of ours that speaks Anthropic's Messages streaming API, event by event.

The real ``anthropic`` SDK (and Parley's worker processes) talk to it through ``ANTHROPIC_BASE_URL``.
It runs on its own thread and event loop, so its timing does not depend on the test's loop, and it
records what it received and when it sent each delta (``time.monotonic()``, comparable across
processes on one machine).

What a request gets is a ``Behaviour``: scripted ones are used first, in order (``script``); after
them ``responder(body)`` decides, by default a fixed answer. Behaviours:

- ``Answer``: ``message_start``, ``content_block_start``, ``ping``, one ``content_block_delta`` per
  chunk, ``content_block_stop``, ``message_delta`` with usage, ``message_stop``;
- ``Status``: an HTTP error (429, 529 …) with the API's JSON error body;
- ``Hang``: reads the request and never answers;
- ``Answer(error_after=n)``: an ``error`` event after n deltas; ``Answer(disconnect_after=n)``: the
  socket is cut after n deltas, without the end of the chunked body.

It also answers OpenAI-compatible ``/chat/completions`` (the same behaviours) and ``/embeddings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    chunks: list[str]
    delay: float = 0.005
    first_delay: float = 0.0
    input_tokens: int = 42
    output_tokens: int | None = None  # default: one per chunk
    model: str = "claude-test"
    error_after: int | None = None
    error_type: str = "overloaded_error"
    disconnect_after: int | None = None


@dataclass(frozen=True)
class Status:
    code: int
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Hang:
    pass


Behaviour = Answer | Status | Hang


@dataclass
class Received:
    """One request as the server saw it."""

    body: dict[str, Any]
    received_at: float
    behaviour: Behaviour
    delta_sent_at: list[float] = field(default_factory=list)
    #: When the client closed the connection while this request was being answered (None: it did not).
    closed_at: float | None = None
    finished: bool = False

    @property
    def text(self) -> str:
        """Everything the model was shown: system prompt and messages."""
        return json.dumps(self.body, ensure_ascii=False)


def default_answer(body: dict[str, Any]) -> Behaviour:
    return Answer(chunks=["Hello", " from", " the", " test", " model", "."])


class FakeAnthropic:
    def __init__(self, responder: Callable[[dict[str, Any]], Behaviour] = default_answer) -> None:
        self.responder = responder
        self.requests: list[Received] = []
        self._scripted: list[Behaviour] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-anthropic", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeAnthropic:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._scripted.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._scripted.clear()
            self.requests.clear()

    def _next(self, body: dict[str, Any]) -> Behaviour:
        with self._lock:
            if self._scripted:
                return self._scripted.pop(0)
        return self.responder(body)

    # -- HTTP -------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))) or b"{}")
        if path.endswith("/embeddings"):
            await _embeddings(body, writer)
            return True
        behaviour = self._next(body)
        received = Received(body=body, received_at=time.monotonic(), behaviour=behaviour)
        with self._lock:
            self.requests.append(received)
        if isinstance(behaviour, Status):
            error = {"type": "error", "error": {"type": behaviour.error_type, "message": behaviour.message}}
            payload = json.dumps(error).encode()
            writer.write(
                f"HTTP/1.1 {behaviour.code} Error\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nrequest-id: req_{uuid.uuid4().hex[:8]}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            received.finished = True
            return True
        if isinstance(behaviour, Hang):
            await reader.read()  # until the client gives up and closes
            received.closed_at = time.monotonic()
            return False
        return await self._stream(behaviour, received, reader, writer, openai=path.endswith("/chat/completions"))

    async def _stream(
        self,
        answer: Answer,
        received: Received,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        openai: bool,
    ) -> bool:
        """Stream the answer while watching for the client closing the connection."""
        watcher = asyncio.ensure_future(reader.read(1))
        send = self._send_openai_chunks if openai else self._send_events
        sender = asyncio.ensure_future(send(answer, received, writer))
        done, _ = await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
        if watcher in done:  # EOF (or unexpected bytes) mid-answer: the client went away
            received.closed_at = time.monotonic()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            return False
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        keep_open: bool = sender.result()
        received.finished = keep_open
        return keep_open

    async def _send_events(self, answer: Answer, received: Received, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"cache-control: no-cache\r\n\r\n"
        )

        async def event(name: str, data: dict[str, Any]) -> None:
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()

        message_id = f"msg_{uuid.uuid4().hex[:12]}"
        await event("message_start", _message_start(message_id, answer))
        await event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})  # fmt: skip
        await event("ping", {"type": "ping"})
        if answer.first_delay:
            await asyncio.sleep(answer.first_delay)
        for i, chunk in enumerate(answer.chunks):
            if answer.disconnect_after is not None and i == answer.disconnect_after:
                writer.transport.abort()
                return False
            if answer.error_after is not None and i == answer.error_after:
                await event("error", {"type": "error", "error": {"type": answer.error_type, "message": "boom"}})
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            if i and answer.delay:
                await asyncio.sleep(answer.delay)
            received.delta_sent_at.append(time.monotonic())
            await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": chunk}})  # fmt: skip
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        output_tokens = len(answer.chunks) if answer.output_tokens is None else answer.output_tokens
        await event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                    "stop_sequence": None}, "usage": {"output_tokens": output_tokens}})  # fmt: skip
        await event("message_stop", {"type": "message_stop"})
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _send_openai_chunks(self, answer: Answer, received: Received, writer: asyncio.StreamWriter) -> bool:
        """The same answer in the OpenAI chat-completions streaming format (for the openai provider)."""
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

        async def data(payload: str) -> None:
            chunk = f"data: {payload}\n\n".encode()
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()

        def choice(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps(
                {"model": answer.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            )

        for i, chunk in enumerate(answer.chunks):
            if answer.disconnect_after is not None and i == answer.disconnect_after:
                writer.transport.abort()
                return False
            if i and answer.delay:
                await asyncio.sleep(answer.delay)
            received.delta_sent_at.append(time.monotonic())
            await data(choice({"content": chunk}))
        await data(choice({}, "stop"))
        output_tokens = len(answer.chunks) if answer.output_tokens is None else answer.output_tokens
        usage = {"prompt_tokens": answer.input_tokens, "completion_tokens": output_tokens}
        await data(json.dumps({"model": answer.model, "choices": [], "usage": usage}))
        await data("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


async def _embeddings(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
    """An OpenAI-compatible ``/embeddings`` answer (384 dimensions, derived from each text's hash), for
    runs that keep the embedding model off the machine under test (bench/assistant.py)."""
    data = []
    for i, text in enumerate(body.get("input", [])):
        seed = hash(text)
        data.append({"index": i, "embedding": [((seed >> (j % 48)) & 0xFF) / 255 + 0.01 for j in range(384)]})
    payload = json.dumps({"data": data}).encode()
    writer.write(
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()


def _message_start(message_id: str, answer: Answer) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": 1},
        },
    }


def words(text: str) -> list[str]:
    """Split an answer into the chunks a model would stream (each word with its leading space)."""
    parts = text.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])]
