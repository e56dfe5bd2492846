"""Benchmark of the assistant's streaming path: what Parley adds between a provider's deltas and a client.

N users (``--answers``, default 50), each alone with the assistant in a conversation of their own and
joined over a WebSocket, send one message at the same moment: N answers stream concurrently. The
provider is our local Messages-API server (``tests/fakes/anthropic_server.py``), which records when it
sent every delta; every client records when each ``stream`` frame arrived. Parley's path per delta:
provider -> ``anthropic`` SDK in ``parley worker`` -> one Redis pipeline (reply stream + live stream)
-> the API node's reader of ``parley:replies`` -> the socket's writer -> the client.

Measured, p50 and p99 over all answers:

- **first token**: the server sending delta 0 -> the client receiving the first ``stream`` frame;
- **per delta**: the server sending delta i -> the client receiving it (i >= 1).

The baseline is the same SDK call made directly (no Parley), N at once, in the same run, against the
same server with the same answers: the server sending a delta -> the SDK yielding it. "added" is Parley
minus the baseline. The server runs on its own thread in this process and timestamps with
``time.monotonic()``, the clock the clients use too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anthropic
import httpx
import websockets

from bench._fanout_servers import Server, run_loop
from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, start_postgres, start_redis
from tests.fakes.anthropic_server import Answer, FakeAnthropic, Received

PASSWORD = "bench-password-1"
#: Clients offer permessage-deflate, as browsers do (``--no-deflate``: they do not).
DEFLATE = True


def answer_for(args: argparse.Namespace) -> Answer:
    return Answer(chunks=[f" tok{i}" for i in range(args.chunks)], delay=args.delay, input_tokens=100)


def percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), cuts[98]


def latencies(sent: list[float], received: list[float]) -> tuple[float, list[float]]:
    """(first-token latency, per-delta latencies of deltas 1..) in milliseconds."""
    pairs = [(r - s) * 1000 for s, r in zip(sent, received, strict=False)]
    return pairs[0], pairs[1:]


# -- Parley ------------------------------------------------------------------------------------------


async def setup_users(base_url: str, n: int) -> list[tuple[str, str]]:
    """(token, conversation id) per user; each conversation has the assistant enabled."""
    gate = asyncio.Semaphore(8)  # registration hashes passwords (Argon2): a few at a time
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:

        async def one(i: int) -> tuple[str, str]:
            async with gate:
                return await register(i)

        async def register(i: int) -> tuple[str, str]:
            email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
            r = await http.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": f"B{i}"})
            token = r.json()["access_token"]
            r = await http.post(
                "/api/conversations",
                json={"title": f"bench {i}", "assistant": {"enabled": True}},
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
            return token, r.json()["id"]

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def one_client(
    ws_url: str, token: str, cid: str, tag: str, warmed: asyncio.Queue[str], go: asyncio.Event
) -> tuple[str, list[float]]:
    """Join, get one warm-up answer, wait for the start, send, then timestamp every ``stream`` frame
    until ``stream_end``: (reply id, arrival times by index)."""
    headers = {"Authorization": f"Bearer {token}"}
    compression = "deflate" if DEFLATE else None
    async with websockets.connect(ws_url, additional_headers=headers, compression=compression) as ws:
        await ws.send(f'{{"type":"join","conversation_id":"{cid}"}}')
        while '"joined"' not in str(await ws.recv()):
            pass
        await ask(ws, cid, f"warm{tag}")
        warmed.put_nowait(tag)
        await go.wait()
        return await ask(ws, cid, tag)


async def ask(ws: Any, cid: str, tag: str) -> tuple[str, list[float]]:
    received: dict[int, float] = {}
    reply_id = ""
    await ws.send(f'{{"type":"send","conversation_id":"{cid}","client_msg_id":"{tag}","text":"{tag} go"}}')
    async with asyncio.timeout(120):
        while True:
            raw = await ws.recv()
            now = time.monotonic()
            if raw.startswith('{"type":"stream",'):
                frame = msgspec_decode(raw)
                received[frame["index"]], reply_id = now, frame["reply_id"]
            elif raw.startswith('{"type":"stream_end"'):
                return reply_id, [received[i] for i in sorted(received)]


def msgspec_decode(raw: str | bytes) -> dict[str, Any]:
    import msgspec

    decoded: dict[str, Any] = msgspec.json.decode(raw)
    return decoded


def sent_by_tag(requests: list[Received]) -> dict[str, list[float]]:
    """The server's send times of each answer, by the tag its question carried."""
    out = {}
    for r in requests:
        last = r.body["messages"][-1]["content"]
        tag = last.rsplit(": ", 1)[-1].split(" ", 1)[0]
        out[tag] = r.delta_sent_at
    return out


async def run_parley(args: argparse.Namespace, env: dict[str, str], tmp: Path, fake: FakeAnthropic) -> dict[str, Any]:
    port = free_port()
    servers = [
        Server("relay", ["-m", "app.cli", "relay"], env, tmp / "relay.log"),
        Server("worker", ["-m", "app.cli", "worker"], env, tmp / "worker.log"),
        Server(
            "api",
            ["-m", "app.cli", "api", "--port", str(port)],
            {**env, "PARLEY_NODE_ID": "bench"},
            tmp / "api.log",
            port,
        ),
    ]
    try:
        for server in servers:
            server.start()
        await servers[-1].wait_ready("/health/ready")
        users = await setup_users(f"http://127.0.0.1:{port}", args.answers)
        await worker_ready(env["REDIS_URL"])
        fake.reset()
        go, warmed = asyncio.Event(), asyncio.Queue[str]()
        tags = [f"b{i}x{uuid.uuid4().hex[:6]}" for i in range(args.answers)]
        tasks = [
            asyncio.create_task(one_client(f"ws://127.0.0.1:{port}/ws", token, cid, tag, warmed, go))
            for (token, cid), tag in zip(users, tags, strict=True)
        ]
        async with asyncio.timeout(120):  # every warm-up answer is in
            for _ in tags:
                await warmed.get()
        await embeddings_settled(env["DATABASE_URL"])
        fake.reset()
        profilers = start_profilers(args, servers, tmp)
        cpu_before = cpu_seconds(servers)
        go.set()
        received = await asyncio.gather(*tasks)
        cpu_used = {name: cpu_seconds(servers)[name] - spent for name, spent in cpu_before.items()}
        for profiler in profilers:
            profiler.wait(60)
        sent = sent_by_tag(list(fake.requests))
        result = collect([(sent[tag], got) for tag, (_, got) in zip(tags, received, strict=True)])
        deltas = sum(len(got) for _, got in received)
        result["cpu_us_per_delta"] = {name: used / deltas * 1e6 for name, used in cpu_used.items()}
        result["hops"] = await redis_hops(env["REDIS_URL"], [(sent[t], r) for t, r in zip(tags, received, strict=True)])
        return result
    finally:
        for server in reversed(servers):
            server.stop()


async def redis_hops(redis_url: str, answers: list[tuple[list[float], tuple[str, list[float]]]]) -> dict[str, Any]:
    """Split the per-delta latency at Redis, by the reply stream's entry ids (Redis's clock, in ms):
    provider -> entry written (the worker's hop) and entry -> client (the API node's hop)."""
    import redis.asyncio as aioredis

    from infrastructure.redis import keys, replies

    offset = time.time() - time.monotonic()
    worker, node = [], []
    client = aioredis.Redis.from_url(redis_url)
    try:
        for sent, (reply_id, received) in answers:
            entries = await client.xrange(keys.reply_stream(uuid.UUID(reply_id)))
            for entry_id, fields in entries:
                entry = replies.decode_entry(fields[b"r"])
                if isinstance(entry, replies.ReplyDelta) and entry.index < min(len(sent), len(received)):
                    written = int(entry_id.split(b"-")[0])
                    worker.append(written - (sent[entry.index] + offset) * 1000)
                    node.append((received[entry.index] + offset) * 1000 - written)
    finally:
        await client.aclose()
    return {"worker": percentiles(worker), "node": percentiles(node)}


# -- baseline ----------------------------------------------------------------------------------------


async def run_baseline(args: argparse.Namespace, fake: FakeAnthropic) -> dict[str, Any]:
    client = anthropic.AsyncAnthropic(api_key="bench", base_url=fake.base_url, max_retries=0)
    fake.reset()

    async def one(tag: str) -> tuple[str, list[float]]:
        received = []
        stream = await client.messages.create(
            model="claude-test",
            max_tokens=1024,
            messages=[{"role": "user", "content": f"X: {tag} go"}],
            stream=True,
        )
        async for event in stream:
            if event.type == "content_block_delta":
                received.append(time.monotonic())
        return tag, received

    await asyncio.gather(*(one(f"warm{i}") for i in range(args.answers)))
    tags = [f"b{i}y{uuid.uuid4().hex[:6]}" for i in range(args.answers)]
    results = await asyncio.gather(*(one(tag) for tag in tags))
    await client.close()
    sent = sent_by_tag(list(fake.requests))
    return collect([(sent[tag], got) for tag, got in results])


def collect(pairs: list[tuple[list[float], list[float]]]) -> dict[str, Any]:
    first, per_delta, complete = [], [], 0
    for sent, got in pairs:
        if len(got) == len(sent) and got:
            complete += 1
        f, rest = latencies(sent, got)
        first.append(f)
        per_delta.extend(rest)
    return {"answers": len(pairs), "complete": complete, "first": percentiles(first), "delta": percentiles(per_delta)}


def report(args: argparse.Namespace, parley: dict[str, Any], baseline: dict[str, Any]) -> None:
    print(
        f"\n{args.answers} concurrent answers, {args.chunks} deltas each, {args.delay * 1000:.0f} ms apart; "
        f"embeddings {args.embeddings}"
    )
    print(f"complete answers: parley {parley['complete']}/{parley['answers']}, baseline {baseline['complete']}")
    print(f"{'ms':<28}{'parley p50':>12}{'p99':>9}{'baseline p50':>15}{'p99':>9}{'added p50':>12}{'p99':>9}")
    for key, label in (("first", "provider first token -> client"), ("delta", "per delta")):
        p, b = parley[key], baseline[key]
        print(f"{label:<28}{p[0]:>12.2f}{p[1]:>9.2f}{b[0]:>15.2f}{b[1]:>9.2f}{p[0] - b[0]:>12.2f}{p[1] - b[1]:>9.2f}")
    cpu = parley["cpu_us_per_delta"]
    print(
        f"server CPU per delta while streaming (µs, load-independent): worker {cpu.get('worker', 0):.0f}, "
        f"API node {cpu.get('api', 0):.0f}, relay {cpu.get('relay', 0):.0f}"
    )
    hops = parley["hops"]
    print("per delta, split at Redis (by reply-stream entry ids, 1 ms resolution):")
    print(f"  provider -> reply stream (worker)   p50 {hops['worker'][0]:7.1f}  p99 {hops['worker'][1]:7.1f}")
    print(f"  reply stream -> client (API node)   p50 {hops['node'][0]:7.1f}  p99 {hops['node'][1]:7.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.assistant", description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=50, help="concurrent answers")
    parser.add_argument("--chunks", type=int, default=40, help="deltas per answer")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between a provider's deltas")
    parser.add_argument(
        "--embeddings",
        choices=["remote", "local"],
        default="remote",
        help="remote: the worker gets vectors over HTTP from the bench's server (the streaming path alone); "
        "local: the worker runs the embedding model itself, competing with the streaming for CPU",
    )
    parser.add_argument("--no-deflate", action="store_true", help="clients do not offer permessage-deflate")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the worker and API node into DIR (raw stacks)")
    args = parser.parse_args(argv)
    global DEFLATE
    DEFLATE = not args.no_deflate
    with tempfile.TemporaryDirectory(prefix="parley-bench-assistant-") as name:
        tmp = Path(name)
        fake = FakeAnthropic(lambda body: answer_for(args)).start()
        pg: EmbeddedPostgres | None = None
        redis: EmbeddedRedis | None = None
        try:
            from infrastructure.migrate import upgrade_head

            redis = start_redis(tmp / "redis")
            pg = start_postgres(tmp / "pg")
            pg.create_database("bench")
            upgrade_head(pg.url("bench"))
            env = bench_env(pg.url("bench"), redis.url, fake.base_url, args.embeddings)
            parley = run_loop(run_parley(args, env, tmp, fake))
            baseline = run_loop(run_baseline(args, fake))
        finally:
            for log in sorted(tmp.glob("*.log")):
                tail = log.read_text()[-1500:]
                if "Traceback" in tail:
                    print(f"--- {log.name}\n{tail}", file=sys.stderr)
            fake.stop()
            if redis is not None:
                redis.stop()
            if pg is not None:
                pg.stop()
    report(args, parley, baseline)
    return 0


async def embeddings_settled(database_url: str) -> None:
    """The worker embeds every message (and answer) in the background: let the warm-up's finish first,
    so that the measured answers only compete with their own messages' embeddings."""
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with asyncio.timeout(120):
            while await conn.fetchval("SELECT count(*) FROM messages WHERE embedding IS NULL"):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


def cpu_seconds(servers: list[Server]) -> dict[str, float]:
    """User + system CPU time each server process has used so far (load-independent cost)."""
    import psutil

    out = {}
    for server in servers:
        if server.popen is not None:
            times = psutil.Process(server.popen.pid).cpu_times()
            out[server.name] = times.user + times.system
    return out


def start_profilers(args: argparse.Namespace, servers: list[Server], tmp: Path) -> list[Any]:
    """``--profile DIR``: py-spy samples the worker and the API node while the measured answers run."""
    import subprocess

    if not args.profile:
        return []
    Path(args.profile).mkdir(parents=True, exist_ok=True)
    seconds = str(int(args.chunks * args.delay + 3))
    procs = []
    for server in servers:
        if server.name in {"worker", "api"} and server.popen is not None:
            out = str(Path(args.profile) / f"{server.name}.txt")
            command = ["py-spy", "record", "--format", "raw", "--duration", seconds, "--rate", "200"]
            command += ["--pid", str(server.popen.pid), "--output", out]
            procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


async def worker_ready(redis_url: str) -> None:
    """The worker loads its embedding model, then creates its consumer group: wait for the group."""
    import redis.asyncio as aioredis

    from infrastructure.redis import keys, streams
    from infrastructure.settings import RedisSettings

    client = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(120):
            for stream in streams.all_streams(RedisSettings().shard_count):
                while True:
                    try:
                        groups = await client.xinfo_groups(stream)
                    except aioredis.ResponseError:
                        groups = []
                    if any(g["name"] == keys.ASSISTANT_GROUP.encode() for g in groups):
                        break
                    await asyncio.sleep(0.2)
    finally:
        await client.aclose()


def bench_env(database_url: str, redis_url: str, anthropic_url: str, embeddings: str) -> dict[str, str]:
    import os
    import secrets

    remote = {"EMBEDDINGS_PROVIDER": "openai", "EMBEDDINGS_BASE_URL": anthropic_url + "/v1"}
    return {
        **(remote if embeddings == "remote" else {}),
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": secrets.token_hex(32),
        "LLM_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": anthropic_url,
        "LLM_MODEL": "claude-test",
        "LLM_RETRIEVAL_K": "0",  # the streaming path is measured, not embeddings
        "PARLEY_LOG_LEVEL": "warning",
        "PARLEY_LIMIT_MESSAGES_PER_SECOND": "100000",
        "PARLEY_LIMIT_MESSAGE_BURST": "100000",
    }


if __name__ == "__main__":
    sys.exit(main())
