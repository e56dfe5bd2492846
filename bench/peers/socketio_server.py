"""The fan-out benchmark's baseline: a python-socketio node that broadcasts through Redis pub/sub.

This is the design a Python team picks when it does not need a durable record: ``socketio.AsyncServer``
with ``AsyncRedisManager`` as its client manager, so a room spans every node. No authentication, no
database, no sequence numbers, nothing kept: a node that misses a pub/sub message (restart, slow
subscriber, Redis failover) loses it for good. It runs on uvicorn like a Parley API node, so the two
differ in what the application does per message, not in the HTTP/WebSocket server or event loop.

Events (all acked):
  ``join {room}``                        -> enter the room; ack ``{"ok": true}``
  ``send {room, client_msg_id, text}``   -> emit ``message {room, client_msg_id, text, sender}`` to the room
                                            through the manager (local sockets now, other nodes via
                                            Redis PUBLISH); ack ``{"ok": true, "client_msg_id": ...}``

Run: ``python bench/peers/socketio_server.py --port 9001 --redis-url redis://127.0.0.1:6379/0``
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvicorn


def build_app(redis_url: str) -> Any:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, logger=False, engineio_logger=False)

    @sio.event
    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.enter_room(sid, data["room"])
        return {"ok": True}

    @sio.event
    async def send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        message = {"room": data["room"], "client_msg_id": data["client_msg_id"], "text": data["text"], "sender": sid}
        await sio.emit("message", message, room=data["room"])
        return {"ok": True, "client_msg_id": data["client_msg_id"]}

    return socketio.ASGIApp(sio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.redis_url), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
