"""A test WebSocket client: a reader task files every frame, recording messages into a History."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.e2e.checker import History


class ChatClient:
    def __init__(self, name: str, history: History) -> None:
        self.name = name
        self.history = history
        self.ws: ClientConnection | None = None
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, url: str, token: str) -> ChatClient:
        self.ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame["type"] == "message":
                    self.history.deliver(self.name, frame["conversation_id"], frame["seq"])
                elif frame["type"] == "ack":
                    future = self.acks.pop(frame["client_msg_id"], None)
                    if future and not future.done():
                        future.set_result(frame)
                elif frame["type"] == "error" and frame.get("ref") in self.acks:
                    self.acks.pop(frame["ref"]).set_exception(RuntimeError(str(frame)))
                await self.frames.put(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))
            for future in self.acks.values():
                if not future.done():
                    future.set_exception(ConnectionError("socket closed before ack"))

    async def send_json(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(frame))

    async def expect(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next frame of this type (frames of other types before it are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if frame["type"] == kind:
                    return frame

    async def expect_any(self, kinds: set[str], timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if frame["type"] in kinds:
                    return frame

    async def join(self, conversation_id: str, after_seq: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join", "conversation_id": conversation_id}
        if after_seq is not None:
            frame["after_seq"] = after_seq
        await self.send_json(frame)
        return await self.expect("joined")

    async def send(self, conversation_id: str, text: str, client_msg_id: str | None = None) -> dict[str, Any]:
        """Send and wait for the ack; the acked seq goes into the history."""
        client_msg_id = client_msg_id or uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.acks[client_msg_id] = future
        await self.send_json(
            {"type": "send", "conversation_id": conversation_id, "client_msg_id": client_msg_id, "text": text}
        )
        ack = await asyncio.wait_for(future, 15)
        self.history.ack(conversation_id, ack["seq"])
        return ack

    def seqs(self, conversation_id: str) -> list[int]:
        return self.history.delivered[self.name][conversation_id]

    async def wait_for_seq(self, conversation_id: str, seq: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not self.seqs(conversation_id) or max(self.seqs(conversation_id)) < seq:  # noqa: ASYNC110 - polls a list the reader task fills
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class Api:
    """REST set-up through a node: users, conversations, tokens."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def user(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            email = f"e2e-{uuid.uuid4().hex[:10]}@example.com"
            r = await http.post("/api/auth/register", json={"email": email, "password": "password-1", "name": "E2E"})
            r.raise_for_status()
            data: dict[str, Any] = r.json()
            return {"id": data["user"]["id"], "token": data["access_token"]}

    async def conversation(self, owner: dict[str, Any], *members: dict[str, Any]) -> str:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            r = await http.post(
                "/api/conversations",
                json={"title": "e2e", "participant_ids": [m["id"] for m in members]},
                headers={"Authorization": f"Bearer {owner['token']}"},
            )
            r.raise_for_status()
            return str(r.json()["id"])

    async def ticket(self, user: dict[str, Any]) -> str:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            r = await http.post("/api/auth/ws-ticket", headers={"Authorization": f"Bearer {user['token']}"})
            r.raise_for_status()
            return str(r.json()["ticket"])
