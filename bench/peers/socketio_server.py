"""The fan-out benchmark's baselines: a python-socketio node that broadcasts through Redis pub/sub,
optionally writing every message to PostgreSQL before it emits it.

This is the design a Python team picks when it does not need a durable record: ``socketio.AsyncServer``
with ``AsyncRedisManager`` as its client manager, so a room spans every node. No authentication, no
database, no sequence numbers, nothing kept: a node that misses a pub/sub message (restart, slow
subscriber, Redis failover) loses it for good. It runs on uvicorn like a Parley API node, so the two
differ in what the application does per message, not in the HTTP/WebSocket server or event loop.

With ``--database-url`` it is the least a team would add for a durable record: one autocommit INSERT
per message (one round trip, one commit with its WAL flush) before the emit, through an asyncpg pool of
``--pool-size`` connections; the ack waits for both. Still no order, numbers, authentication or
catch-up: a message is kept, but a node that misses its pub/sub copy still never delivers it. It is
the floor under any design that acks only what is durable (``bench.fanout --durable-baseline``).
The table (``TABLE_SQL``) is created by the benchmark before the nodes start.

Events (all acked):
  ``join {room}``                        -> enter the room; ack ``{"ok": true}``
  ``send {room, client_msg_id, text}``   -> [INSERT, then] emit ``message {room, client_msg_id, text,
                                            sender}`` to the room through the manager (local sockets
                                            now, other nodes via Redis PUBLISH); ack
                                            ``{"ok": true, "client_msg_id": ...}``

Run: ``python bench/peers/socketio_server.py --port 9001 --redis-url redis://127.0.0.1:6379/0
[--database-url postgresql://...]``
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvicorn

#: The durable variant's table: what a message needs to be found again, an id for order of arrival.
TABLE_SQL = """CREATE TABLE IF NOT EXISTS sio_messages (
    id bigserial PRIMARY KEY,
    room text NOT NULL,
    client_msg_id text NOT NULL,
    sender text NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
INSERT_SQL = "INSERT INTO sio_messages (room, client_msg_id, sender, text) VALUES ($1, $2, $3, $4)"


def build_app(redis_url: str, database_url: str | None = None, pool_size: int = 10) -> Any:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, logger=False, engineio_logger=False)
    pools: list[Any] = []  # the asyncpg pool of the durable variant, made at startup

    @sio.event
    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.enter_room(sid, data["room"])
        return {"ok": True}

    @sio.event
    async def send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        message = {"room": data["room"], "client_msg_id": data["client_msg_id"], "text": data["text"], "sender": sid}
        if pools:
            await pools[0].execute(INSERT_SQL, message["room"], message["client_msg_id"], sid, message["text"])
        await sio.emit("message", message, room=data["room"])
        return {"ok": True, "client_msg_id": data["client_msg_id"]}

    async def startup() -> None:
        if database_url is not None:
            import asyncpg

            pools.append(await asyncpg.create_pool(database_url, min_size=pool_size, max_size=pool_size))

    async def shutdown() -> None:
        for pool in pools:
            await pool.close()

    return socketio.ASGIApp(sio, on_startup=startup, on_shutdown=shutdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--database-url", help="asyncpg DSN: INSERT every message before emitting it")
    parser.add_argument("--pool-size", type=int, default=10, help="PostgreSQL connections per node (durable only)")
    args = parser.parse_args()
    app = build_app(args.redis_url, args.database_url, args.pool_size)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
