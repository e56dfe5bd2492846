"""Load benchmark of WebSocket fan-out: two Parley API nodes and a relay against a Socket.IO baseline.

What it measures: C clients hold WebSockets split over two nodes, joined to R rooms of C/R members.
S of them send at an aggregate T msg/s for D seconds on an open-loop schedule (every send has a due
time; a late one is sent late, not skipped, and timed from its due time). For every send: the time to
its ``ack``; for every ``message`` frame on every socket of the room (the sender's own included): the
time from the due send time to delivery. Then delivered/expected (expected = acked messages x
sockets joined to their room and still open at the end; sockets the server closed are counted apart),
loss (expected, never delivered after the drain), duplicates and
out-of-order deliveries per socket, throughput, and the servers' CPU and memory (RSS per connection).

Parley's path per message: WS frame -> rate limit (Redis) -> ``post_message`` transaction (row lock,
seq, outbox row, NOTIFY) -> ack; relay: outbox -> XADD; every node: XREADGROUP through its own group
-> per-socket queue -> writer task. Each socket sees seq 1, 2, 3 ... exactly once, even across a
restart or a Redis that lost data.

The baseline (``bench/peers/socketio_server.py``) is what a Python team would otherwise build:
python-socketio with ``AsyncRedisManager``, two nodes sharing rooms through Redis pub/sub, on the same
uvicorn server and the same private Redis, driven by the same scenario. It acks once the message is
handed to Redis; it keeps nothing, authenticates no one and numbers nothing, so a node that misses a
pub/sub message loses it for good. The ratios parley/baseline are the price of the durable record.

``--durable-baseline`` adds a third server, the same Socket.IO nodes writing every message to the same
PostgreSQL (one autocommit INSERT, its own commit) before emitting it: the least a team would do to
ack only what is kept, and still with no order, numbers or catch-up. Its numbers are the floor under
any durable design on this machine; the ratios parley/durable are what Parley's promises cost beyond it.

Everything runs on this machine (loopback): the servers are started and stopped by the benchmark.
The exit code is 1 if Parley lost, duplicated or reordered any message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._fanout_clients import ConnectReport, LoadReport, LocalWorker, Plan, ProcWorker, SocketSpec
from bench._fanout_clients import raise_nofile_limit as raise_nofile
from bench._fanout_servers import ROOT, Sampler, Server, run_loop, socketio_nodes, start_socketio_nodes
from bench.peers.socketio_server import TABLE_SQL
from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, start_postgres, start_redis

PASSWORD = "bench-password-1"
SERVER_GROUPS = ("nodes", "relay", "postgres", "redis")
#: The servers a run can measure, in the order they run and are reported.
KINDS = ("baseline", "durable", "parley")
#: Users are reused across rooms: registration is Argon2 (~50 ms each), sockets per user are not limited here.
MAX_USERS = 200
LIMITS = {
    "PARLEY_LIMIT_MESSAGES_PER_SECOND": "100000",
    "PARLEY_LIMIT_MESSAGE_BURST": "100000",
    "PARLEY_LIMIT_SOCKETS_PER_USER": "100000",
    "PARLEY_LIMIT_MAX_PARTICIPANTS_PER_REQUEST": "100000",
    "JWT_ACCESS_TTL": "7200",  # tokens outlive the longest connect phase
}


@dataclass
class Outcome:
    connect: ConnectReport
    load: LoadReport
    planned: int
    resources: dict[str, Any]
    seconds: float  # from the start time to the last frame


# -- layout: rooms, members, nodes, senders ----------------------------------------------------------


def layout(args: argparse.Namespace) -> tuple[int, list[tuple[int, int]], list[int]]:
    """Socket i sits in room i % R at slot i // R, on node slot % 2 (so every room spans both nodes).
    Returns (users, [(room, user) per socket], sender socket indexes spread over rooms and nodes)."""
    c, r = args.connections, args.rooms
    members = -(-c // r)
    users = max(min(c, MAX_USERS), members)
    sockets = [(i % r, (i % r * members + i // r) % users) for i in range(c)]
    order = [room + r * ((room + j) % members) for j in range(members) for room in range(r)]
    return users, sockets, [i for i in order if i < c][: args.senders]


def specs(
    sockets: list[tuple[int, int]], senders: list[int], urls: list[str], rooms: list[str], tokens: list[str]
) -> list[SocketSpec]:
    sender_of = {socket: k for k, socket in enumerate(senders)}
    return [
        SocketSpec(urls[(i // len(rooms)) % 2], rooms[room], tokens[user] if tokens else "", sender_of.get(i, -1))
        for i, (room, user) in enumerate(sockets)
    ]


async def parley_setup(args: argparse.Namespace, ports: list[int]) -> list[SocketSpec]:
    """Register users, create conversations with their members, hand out tokens (all over REST)."""
    users, sockets, senders = layout(args)
    tag, gate = secrets.token_hex(4), asyncio.Semaphore(8)
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    async with httpx.AsyncClient(timeout=60) as http:

        async def register(u: int) -> tuple[str, str]:
            async with gate:
                body = {"email": f"bench-{tag}-{u}@example.com", "password": PASSWORD, "name": f"bench {u}"}
                r = await http.post(bases[u % 2] + "/api/auth/register", json=body)
                r.raise_for_status()
                return r.json()["user"]["id"], r.json()["access_token"]

        accounts = await asyncio.gather(*(register(u) for u in range(users)))
        members: dict[int, list[int]] = {}
        for room, user in sockets:
            members.setdefault(room, []).append(user)

        async def create(room: int) -> str:
            owner, *others = members[room]
            async with gate:
                r = await http.post(
                    bases[room % 2] + "/api/conversations",
                    json={"title": f"bench {room}", "participant_ids": [accounts[u][0] for u in others]},
                    headers={"Authorization": f"Bearer {accounts[owner][1]}"},
                )
                r.raise_for_status()
                return str(r.json()["id"])

        rooms = list(await asyncio.gather(*(create(room) for room in range(args.rooms))))
    urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
    return specs(sockets, senders, urls, rooms, [token for _, token in accounts])


def baseline_setup(args: argparse.Namespace, ports: list[int]) -> list[SocketSpec]:
    _, sockets, senders = layout(args)
    rooms = [f"room-{r}" for r in range(args.rooms)]
    return specs(sockets, senders, [f"http://127.0.0.1:{p}" for p in ports], rooms, [])


# -- one scenario ------------------------------------------------------------------------------------


async def drive(
    kind: str, args: argparse.Namespace, sockets: list[SocketSpec], sampler: Sampler, planned: int
) -> Outcome:
    """Connect every client (RSS before/after), then load with the sampler running."""
    k = args.client_procs
    rss_before = sampler.rss("nodes")
    plans = [
        Plan(kind, sockets[w::k], args.senders, args.rate, args.duration, args.drain, -(-args.connect_concurrency // k))
        for w in range(k)
    ]
    workers: list[LocalWorker | ProcWorker] = (
        [LocalWorker(p) for p in plans] if k == 1 else [ProcWorker(p) for p in plans]
    )
    try:
        connecting = Sampler(dict(sampler.groups))
        connecting.start()
        connect_timeout = 60 + len(sockets) / 20
        connect = ConnectReport.merge(await asyncio.gather(*(w.connected(connect_timeout) for w in workers)))
        connect_cpu = await connecting.stop()
        await asyncio.sleep(2)  # let the nodes settle (presence announcements, GC) before measuring
        servers_cpu_s = sum(v for g, v in connect_cpu.items() if g in SERVER_GROUPS) * connecting.wall / 100
        resources: dict[str, Any] = {"rss_before": rss_before, "rss_connected": sampler.rss("nodes")}
        resources["connect_cpu_ms"] = 1000 * servers_cpu_s / max(len(connect.connect_ms), 1)
        sampler.groups["client"] = [os.getpid()] if k == 1 else [w.pid for w in workers if w.pid]
        start_at = time.time() + 1
        sampler.start()
        timeout = args.duration + args.drain + 60
        loads = await asyncio.gather(*(w.finish(start_at, timeout) for w in workers))
        resources["cpu"], resources["load_wall"] = await sampler.stop(), sampler.wall
        resources["peak_rss"] = dict(sampler.peak)
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
    load = LoadReport.merge(loads)
    return Outcome(connect, load, planned, resources, max(load.last_frame_at - start_at, 1e-9))


async def run_parley(
    args: argparse.Namespace, env: dict[str, str], tmp: Path, pg: EmbeddedPostgres, redis: EmbeddedRedis
) -> Outcome:
    servers = [Server("relay", ["-m", "app.cli", "relay"], env, tmp / "relay.log")]
    for n in (1, 2):
        port = free_port()
        node_env = {**env, "PARLEY_NODE_ID": f"bench-{n}"}
        args_ = ["-m", "app.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
        servers.append(Server(f"api{n}", args_, node_env, tmp / f"api{n}.log", port))
    try:
        for server in servers:
            server.start()
        await asyncio.gather(*(s.wait_ready("/health/ready") for s in servers[1:]))
        if servers[0].popen is None or servers[0].popen.poll() is not None:
            raise RuntimeError(f"the relay exited; see {servers[0].log}:\n{servers[0].log.read_text()[-2000:]}")
        sockets = await parley_setup(args, [s.port for s in servers[1:] if s.port])
        pids = {s.name: s.popen.pid for s in servers if s.popen}
        postgres = int(pg.server.get_postmaster_info().pid)
        groups = {"nodes": [pids["api1"], pids["api2"]], "relay": [pids["relay"]], "postgres": [postgres]}
        sampler = Sampler({**groups, "redis": [redis.process.pid]})
        return await drive("parley", args, sockets, sampler, planned(args))
    finally:
        for server in reversed(servers):
            server.stop()


async def run_baseline(
    args: argparse.Namespace, redis: EmbeddedRedis, tmp: Path, pg: EmbeddedPostgres | None = None
) -> Outcome:
    """The Socket.IO baseline; with ``pg``, its durable variant (a database of its own on that server)."""
    database_url = None
    groups: dict[str, list[int]] = {"redis": [redis.process.pid]}
    if pg is not None:
        import asyncpg

        pg.create_database("sio")
        database_url = pg.url("sio").replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(TABLE_SQL)
        finally:
            await conn.close()
        groups["postgres"] = [int(pg.server.get_postmaster_info().pid)]
    servers = socketio_nodes(redis.url, tmp, database_url)
    try:
        await start_socketio_nodes(servers)
        sampler = Sampler({"nodes": [s.popen.pid for s in servers if s.popen], **groups})
        kind = "socketio" if args.sio_client == "socketio" else "baseline"
        sockets = baseline_setup(args, [s.port for s in servers if s.port])
        return await drive(kind, args, sockets, sampler, planned(args))
    finally:
        for server in servers:
            server.stop()


def planned(args: argparse.Namespace) -> int:
    """Sends on the schedule (the same rule as the senders': message n of sender k is due at (k + nS)/T)."""
    total = 0
    for k in range(args.senders):
        n = 0
        while (k + n * args.senders) / args.rate < args.duration:
            n += 1
        total += n
    return total


# -- results -----------------------------------------------------------------------------------------


def cuts(values: list[float]) -> tuple[float, float, float] | None:
    if len(values) < 2:
        return (values[0],) * 3 if values else None
    q = statistics.quantiles(values, n=100, method="inclusive")
    return round(q[49], 2), round(q[94], 2), round(q[98], 2)


def summarize(o: Outcome, args: argparse.Namespace) -> dict[str, Any]:
    load, rooms = o.load, o.load.kept_rooms  # sockets that stayed open; see LoadReport.kept_delivered
    expected = sum(rooms[room] for room in load.acked.values())
    delivered = sum(min(load.kept_delivered[cmid], rooms[room]) for cmid, room in load.acked.items())
    unacked = sum(n for cmid, n in load.delivered.items() if cmid not in load.acked)
    held = len(o.connect.connect_ms) - sum(load.dropped.values())
    res = o.resources
    grown = res["rss_connected"] - res["rss_before"]
    cpu = {k: round(v, 1) for k, v in res["cpu"].items()}
    cpu["other"] = round(cpu["machine"] - sum(v for k, v in cpu.items() if k not in ("machine", "steal")), 1)
    servers = sum(v for k, v in res["cpu"].items() if k in SERVER_GROUPS)
    cpu_per_msg = 10 * servers * res["load_wall"] / max(len(load.acked), 1)  # % x s / 100 -> s; x 1000 -> ms
    return {
        "connections": args.connections, "held": held, "connect_failed": o.connect.failed,
        "connect_errors": o.connect.errors, "connect_seconds": round(o.connect.seconds, 2),
        "connect_ms": cuts(o.connect.connect_ms), "connect_cpu_ms": round(res["connect_cpu_ms"], 2),
        "planned": o.planned, "sent": load.sent, "send_failed": load.send_failed, "acked": len(load.acked),
        "errors": dict(load.errors), "ack_ms": cuts(load.ack_ms), "delivery_ms": cuts(load.delivery_ms),
        "delivery_max_ms": round(max(load.delivery_ms), 2) if load.delivery_ms else None,
        "send_lag_ms": cuts(load.send_lag_ms), "expected": expected, "delivered": delivered,
        "loss": expected - delivered, "unacked_delivered": unacked, "duplicates": load.duplicates,
        "out_of_order": load.out_of_order, "dropped": dict(load.dropped), "other_frames": dict(load.other_frames),
        "throughput": round(sum(load.delivered.values()) / o.seconds, 1), "cpu_pct": cpu,
        "cpu_ms_per_message": round(cpu_per_msg, 2),
        "drain_seconds": round(load.drain_seconds, 1), "drain_cut": load.drain_cut,
        "rss_mb": {k: round(v / 2**20, 1) for k, v in res["peak_rss"].items()},
        "rss_per_conn_kb": round(grown / max(len(o.connect.connect_ms), 1) / 1024, 1),
    }  # fmt: skip


def _ms(t: Any) -> str:
    return "/".join(f"{v:.1f}" for v in t) if t else "-"


ROWS: list[tuple[str, Any, Any]] = [
    ("connections held", lambda s: f"{s['held']}/{s['connections']}", lambda s: s["held"]),
    ("connect failures", lambda s: str(s["connect_failed"]), None),
    ("connect phase s", lambda s: f"{s['connect_seconds']:.1f}", lambda s: s["connect_seconds"]),
    ("connect+join p50/95/99 ms", lambda s: _ms(s["connect_ms"]), lambda s: s["connect_ms"]),
    ("server CPU ms per connect", lambda s: f"{s['connect_cpu_ms']:.2f}", lambda s: s["connect_cpu_ms"]),
    ("sent/planned", lambda s: f"{s['sent']}/{s['planned']}", None),
    ("acked", lambda s: str(s["acked"]), None),
    ("ack p50/95/99 ms", lambda s: _ms(s["ack_ms"]), lambda s: s["ack_ms"]),
    ("delivery p50/95/99 ms", lambda s: _ms(s["delivery_ms"]), lambda s: s["delivery_ms"]),
    ("delivery max ms", lambda s: _ms([s["delivery_max_ms"]] if s["delivery_max_ms"] else None), None),
    ("sockets dropped by server", lambda s: str(sum(s["dropped"].values())), None),
    ("delivered/expected", lambda s: f"{s['delivered']}/{s['expected']}", None),
    ("drain s", lambda s: f"{s['drain_seconds']:.1f}" + (" (cut off)" if s["drain_cut"] else ""), None),
    ("loss", lambda s: str(s["loss"]), None),
    ("duplicates", lambda s: str(s["duplicates"]), None),
    ("out of order", lambda s: str(s["out_of_order"]), None),
    ("throughput frames/s", lambda s: f"{s['throughput']:.0f}", lambda s: s["throughput"]),
    ("server CPU % nodes", lambda s: f"{s['cpu_pct']['nodes']:.0f}", lambda s: s["cpu_pct"]["nodes"]),
    ("server CPU % relay", lambda s: f"{s['cpu_pct'].get('relay', 0):.0f}", None),
    ("server CPU % postgres", lambda s: f"{s['cpu_pct'].get('postgres', 0):.0f}", None),
    ("server CPU % redis", lambda s: f"{s['cpu_pct']['redis']:.0f}", lambda s: s["cpu_pct"]["redis"]),
    ("server CPU ms per message", lambda s: f"{s['cpu_ms_per_message']:.2f}", lambda s: s["cpu_ms_per_message"]),
    ("server RSS MB nodes (peak)", lambda s: f"{s['rss_mb']['nodes']:.0f}", lambda s: s["rss_mb"]["nodes"]),
    ("RSS per connection KB", lambda s: f"{s['rss_per_conn_kb']:.1f}", lambda s: s["rss_per_conn_kb"]),
    ("client CPU %", lambda s: f"{s['cpu_pct']['client']:.0f}", None),
    ("other processes+kernel CPU %", lambda s: f"{max(s['cpu_pct']['other'], 0):.0f}", None),
    ("machine CPU % (all)", lambda s: f"{s['cpu_pct']['machine']:.0f}/{100 * (os.cpu_count() or 1)}", None),
    ("CPU stolen by hypervisor %", lambda s: f"{s['cpu_pct']['steal']:.0f}", None),
    ("client send lag p50/95/99 ms", lambda s: _ms(s["send_lag_ms"]), None),
]


def _ratio(p: Any, b: Any) -> str:
    if isinstance(p, tuple | list):
        return "/".join(_ratio(x, y) for x, y in zip(p, b, strict=True))
    if not b:
        return "-"
    r = p / b
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], nofile: int, code: str) -> None:
    members = -(-args.connections // args.rooms)
    print("Parley WebSocket fan-out benchmark")
    print(f"code      {code}")
    print(
        f"machine   {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, nofile {nofile}"
    )
    print(
        f"load      {args.connections} connections over 2 nodes in {args.rooms} rooms ({members} per room), "
        f"{args.senders} senders, {args.rate:g} msg/s for {args.duration:g} s, drain <= {args.drain:g} s, "
        f"{args.client_procs} client process(es); baseline client: {args.sio_client}\n"
    )
    kinds = [k for k in KINDS if k in results]
    ratios = [k for k in kinds if k != "parley"] if "parley" in results else []
    head = f"{'':<30}" + "".join(f"{k:>26}" for k in kinds) + "".join(f"{'parley/' + k:>26}" for k in ratios)
    print(head + "\n" + "-" * len(head))
    for label, text, num in ROWS:
        line = f"{label:<30}" + "".join(f"{text(results[k]):>26}" for k in kinds)
        for k in ratios:
            if num is not None and num(results["parley"]) and num(results[k]):
                line += f"{_ratio(num(results['parley']), num(results[k])):>26}"
            else:
                line += f"{'':>26}"
        print(line.rstrip())
    print(
        "\nCPU % = CPU time / wall time over the load and drain (100 = one core); nodes = both API/Socket.IO"
        "\nnodes. Client CPU near 100 per client process, or a growing send lag, means the load generator is the"
        "\nlimit; 'other processes+kernel' is CPU the machine spent outside the measured processes (other work,"
        "\nkernel I/O threads): it competes for the same cores. RSS per connection = growth of the nodes' RSS"
        "\nwhile connecting / connections made; CPU ms per message = all servers' CPU over the window / acked"
        "\nmessages (it includes idle work, so it is inflated at low rates). A drain 'cut off' means deliveries"
        "\nwere still arriving: the system was behind, and 'loss' counts what had not arrived by then. Loss and"
        "\ndelivered/expected count the sockets that stayed open; sockets the server closed are listed apart."
    )
    for kind in kinds:
        s = results[kind]
        notes = {k: s[k] for k in ("connect_errors", "errors", "dropped", "unacked_delivered", "send_failed") if s[k]}
        if notes:
            print(f"{kind}: {json.dumps(notes)}")
    if "parley" in results:
        p = results["parley"]
        ok = p["loss"] == p["duplicates"] == p["out_of_order"] == 0
        print(f"\ncheck parley {'OK' if ok else 'FAIL'}  loss {p['loss']}, duplicates {p['duplicates']}, "
              f"out of order {p['out_of_order']}")  # fmt: skip
    if args.json:
        machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
        params = {k: getattr(args, k) for k in ("connections", "rooms", "senders", "rate", "duration", "client_procs")}
        print(json.dumps({"machine": machine, "code": code, "params": params, **results}))


def revision() -> str:
    """The commit the servers ran, and whether the work tree differed from it (read-only git calls)."""
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "app", "domain", "infrastructure", "workers"],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes in app/domain/infrastructure/workers" if dirty.stdout else "")


def print_logs(tmp: Path) -> None:
    """The tail of any server log with a warning or an error in it (normally none)."""
    for log in sorted(tmp.glob("*.log")):
        lines = log.read_text(errors="replace").strip().splitlines()
        if any(word in line for line in lines for word in ("WARNING", "ERROR", "CRITICAL", "Traceback")):
            print(f"--- {log.name}: {len(lines)} log lines, last ones:\n" + "\n".join(lines[-15:]))


async def run(args: argparse.Namespace, tmp: Path, pg: EmbeddedPostgres | None, redis: EmbeddedRedis) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not args.skip_baseline:
        results["baseline"] = summarize(await run_baseline(args, redis, tmp), args)
    if args.durable_baseline and pg is not None:
        results["durable"] = summarize(await run_baseline(args, redis, tmp, pg), args)
    if pg is not None and not args.only_baseline:
        env = {**os.environ, **LIMITS, "PARLEY_LOG_LEVEL": "warning", "JWT_SECRET": secrets.token_hex(32)}
        env.update(DATABASE_URL=pg.url("bench"), REDIS_URL=redis.url, LLM_PROVIDER="offline")
        results["parley"] = summarize(await run_parley(args, env, tmp, pg, redis), args)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000, help="WebSockets held, split over two nodes")
    parser.add_argument("--rooms", type=int, default=100, help="rooms (conversations); members = connections/rooms")
    parser.add_argument("--senders", type=int, default=100, help="sockets that send, spread over rooms and nodes")
    parser.add_argument("--rate", type=float, default=500, help="messages per second over all senders")
    parser.add_argument("--duration", type=float, default=20, help="seconds of sending")
    parser.add_argument(
        "--drain",
        type=float,
        default=30,
        help="max seconds to wait for late acks and deliveries (ends after 2 s quiet)",
    )
    parser.add_argument("--client-procs", type=int, default=1, help="client worker processes (1: this process)")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="connects in flight (all workers)")
    parser.add_argument(
        "--sio-client",
        choices=["websockets", "socketio"],
        default="websockets",
        help="baseline client: Engine.IO spoken on websockets (as Parley's client) or python-socketio's AsyncClient",
    )
    parser.add_argument(
        "--skip-baseline",
        action="store_true",
        help="skip the (ephemeral) Socket.IO baseline: Parley only (and the durable one, if asked for)",
    )
    parser.add_argument("--only-baseline", action="store_true", help="run the Socket.IO baseline(s) only")
    parser.add_argument(
        "--durable-baseline",
        action="store_true",
        help="also run the Socket.IO nodes with an INSERT (own commit) of every message before its emit",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args(argv)
    if args.skip_baseline and args.only_baseline:
        parser.error("--skip-baseline and --only-baseline exclude each other")
    if not 1 <= args.senders <= args.connections or not 1 <= args.rooms <= args.connections:
        parser.error("need 1 <= --senders <= --connections and 1 <= --rooms <= --connections")
    if min(args.rate, args.duration, args.client_procs, args.connect_concurrency) <= 0:
        parser.error("--rate, --duration, --client-procs and --connect-concurrency must be positive")
    nofile, code = raise_nofile(), revision()
    with tempfile.TemporaryDirectory(prefix="parley-bench-fanout-") as name:
        tmp = Path(name)
        pg: EmbeddedPostgres | None = None
        redis: EmbeddedRedis | None = None
        try:
            redis = start_redis(tmp / "redis")
            if not args.only_baseline or args.durable_baseline:
                pg = start_postgres(tmp / "pg")
            if not args.only_baseline:
                from infrastructure.migrate import upgrade_head

                assert pg is not None
                pg.create_database("bench")
                upgrade_head(pg.url("bench"))  # blocking, with its own event loop: before asyncio.run
            results = run_loop(run(args, tmp, pg, redis))
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        finally:
            print_logs(tmp)
            if redis is not None:
                redis.stop()
            if pg is not None:
                pg.stop()
    report(args, results, nofile, code)
    p = results.get("parley")
    return 1 if p and (p["loss"] or p["duplicates"] or p["out_of_order"]) else 0


if __name__ == "__main__":
    sys.exit(main())
