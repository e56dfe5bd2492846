"""Connection benchmark: idle sockets held by two nodes, connect and join times, reconnect storms.

What it measures, for Parley (two ``parley api`` nodes and a relay on PostgreSQL and Redis, as
``bench.fanout`` starts them) in one or more server variants, and for the Socket.IO baseline of
``bench.fanout`` (``bench/peers/socketio_server.py``) in the same run:

- **hold**: C clients connect (split over the two nodes, every room spanning both) and join their room.
  The nodes' RSS before and after (idle, 3 s after the last join) gives the memory per connection, per
  node; the handshake (``open``) and the ``join`` are timed apart.
- **storm**: every client closes its socket at the same moment, then all reconnect and rejoin (Parley:
  ``join`` with ``after_seq``) as fast as the client processes can: the settle time runs from the drop
  to the last ``joined``.
- **failover** (``--failover``): node 1 is killed with SIGKILL; its clients notice the dropped
  connection, reconnect to node 2 and rejoin; settle time from the kill to the last ``joined``.

Nothing is sent: this is the cost of holding and (re)establishing sockets, not of messages. The exit
code is 1 if a Parley client failed to connect or rejoin.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench._conn_clients import ClientProc, StepReport
from bench._fanout_clients import SocketSpec
from bench._fanout_clients import raise_nofile_limit as raise_nofile
from bench._fanout_servers import Sampler, Server, run_loop, socketio_nodes, start_socketio_nodes
from bench.fanout import LIMITS, baseline_setup, parley_setup, revision
from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, start_postgres, start_redis

SETTLE_SECONDS = 3.0
#: The nodes' CPU is sampled this long while they hold the idle sockets (pings, session checks).
IDLE_SECONDS = 6.0


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "parley" | "baseline"
    api_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def parse_variant(text: str) -> Variant:
    """``NAME`` or ``NAME=TOKENS``: tokens ``KEY=VALUE`` (upper-case key) go to the nodes' environment,
    the others to ``parley api``; e.g. ``granian=--server granian`` or ``nodeflate=PARLEY_WS_DEFLATE=false``."""
    name, _, rest = text.partition("=")
    env, api = [], []
    for token in rest.split():
        key, eq, value = token.partition("=")
        if eq and key.isupper():
            env.append((key, value))
        else:
            api.append(token)
    return Variant(name, "parley", tuple(api), tuple(env))


def cuts(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98]


def _ms(t: tuple[float, float] | None) -> str:
    return "-" if t is None else f"{t[0]:.1f}/{t[1]:.1f}"


async def _fan(procs: list[ClientProc], command: str, arg: Any = None) -> StepReport:
    return StepReport.merge(list(await asyncio.gather(*(p.call(command, arg) for p in procs))))


def _tree(pid: int) -> list[int]:
    """A node's process and its children (Granian serves from a worker under its supervisor)."""
    try:
        proc = psutil.Process(pid)
        return [pid, *(p.pid for p in proc.children(recursive=True))]
    except psutil.Error:
        return [pid]


def _rss(pids: list[int]) -> list[int]:
    return [Sampler({"n": _tree(pid)}).rss("n") for pid in pids]


async def measure(
    variant: Variant,
    args: argparse.Namespace,
    sockets: list[SocketSpec],
    nodes: list[Server],
    services: dict[str, list[int]],
) -> dict[str, Any]:
    """Hold, storm and (optionally) failover against running nodes; ``services``: the other server
    processes by group (PostgreSQL, Redis, relay), whose CPU during a storm is reported beside the
    nodes' and the clients'."""
    pids = [s.popen.pid for s in nodes if s.popen]
    urls = sorted({s.url for s in sockets}, key=[s.url for s in sockets].index)
    per_node = [sum(1 for s in sockets if s.url == u) for u in urls]
    await asyncio.sleep(SETTLE_SECONDS)
    before = _rss(pids)
    k = args.client_procs
    procs = [ClientProc(variant.kind, sockets[w::k], -(-args.connect_concurrency // k), args.deflate) for w in range(k)]
    out: dict[str, Any] = {"variant": variant.name, "connections": len(sockets)}
    spy = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        target = args.profile / f"{variant.name}-node1.txt"
        spy_args = ["record", "--pid", str(pids[0]), "--format", "raw", "--rate", "200", "--subprocesses"]
        spy = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited: it records until stopped)
            [str(Path(sys.executable).parent / "py-spy"), *spy_args, "-o", str(target)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        cpu = Sampler({"nodes": [p for pid in pids for p in _tree(pid)]})
        cpu.start()
        hold = await _fan(procs, "connect")
        out["connect_cpu_ms"] = 10 * (await cpu.stop())["nodes"] * cpu.wall / max(len(hold.join_ms), 1)
        out["connect_s"] = hold.settled_at - hold.started_at
        await asyncio.sleep(SETTLE_SECONDS)
        after = _rss(pids)
        idle = Sampler({"nodes": [p for pid in pids for p in _tree(pid)]})
        idle.start()
        await asyncio.sleep(IDLE_SECONDS)
        out["idle_cpu"] = (await idle.stop())["nodes"]
        probe = await _fan(procs, "probe", args.probe // k)
        out["probe_join"] = cuts(probe.join_ms)
        out["held"], out["failed"], out["errors"] = len(hold.join_ms), hold.failed, hold.errors
        out["rss_kib"] = [(a - b) / n / 1024 for a, b, n in zip(after, before, per_node, strict=True)]
        out["rss_mb"] = [a / 2**20 for a in after]
        out["open"], out["join"] = cuts(hold.open_ms), cuts(hold.join_ms)
        for round_ in range(args.storms):
            nodes_now = [p for pid in pids for p in _tree(pid)]
            storm_cpu = Sampler({"nodes": nodes_now, "clients": [p.pid for p in procs if p.pid], **services})
            storm_cpu.start()
            storm = await _fan(procs, "storm", time.time() + 0.5)
            out["storm_cpu"] = await storm_cpu.stop()
            out.setdefault("storm_s", []).append(storm.settled_at - storm.started_at)
            out.setdefault("storm_close_s", []).append(storm.closed_at - storm.started_at)
            out["storm_failed"] = out.get("storm_failed", 0) + storm.failed
            out["storm_errors"] = out.get("storm_errors", []) + storm.errors
            out["storm_open"], out["storm_join"] = cuts(storm.open_ms), cuts(storm.join_ms)
            await asyncio.sleep(SETTLE_SECONDS if round_ + 1 < args.storms else 0)
        if args.failover:
            await asyncio.sleep(SETTLE_SECONDS)
            killed_at = time.time()
            os.killpg(pids[0], signal.SIGKILL)  # the node's session: Granian's worker too
            fail = await _fan(procs, "failover", (urls[0], urls[1], killed_at))
            out["failover_s"], out["failover_failed"] = fail.settled_at - fail.started_at, fail.failed
            out["failover_moved"] = len(fail.join_ms) + fail.failed
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait, 60)
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
    return out


async def run_parley(
    variant: Variant, args: argparse.Namespace, tmp: Path, pg: EmbeddedPostgres, redis: EmbeddedRedis
) -> dict[str, Any]:
    env = {**os.environ, **LIMITS, "PARLEY_LOG_LEVEL": "warning", "JWT_SECRET": secrets.token_hex(32)}
    env.update(DATABASE_URL=pg.url("bench"), REDIS_URL=redis.url, LLM_PROVIDER="offline", **dict(variant.env))
    servers = [Server("relay", ["-m", "app.cli", "relay"], env, tmp / f"{variant.name}-relay.log")]
    for n in (1, 2):
        port = free_port()
        argv = ["-m", "app.cli", "api", "--host", "127.0.0.1", "--port", str(port), *variant.api_args]
        log = tmp / f"{variant.name}-api{n}.log"
        servers.append(Server(f"api{n}", argv, {**env, "PARLEY_NODE_ID": f"bench-{variant.name}-{n}"}, log, port))
    try:
        for server in servers:
            server.start()
        await asyncio.gather(*(s.wait_ready("/health/ready") for s in servers[1:]))
        sockets = await parley_setup(_layout_args(args), [s.port for s in servers[1:] if s.port])
        relay = [servers[0].popen.pid] if servers[0].popen else []
        postgres = [int(pg.server.get_postmaster_info().pid)]
        services = {"postgres": postgres, "redis": [redis.process.pid], "relay": relay}
        return await measure(variant, args, sockets, servers[1:], services)
    finally:
        for server in reversed(servers):
            server.stop()


async def run_baseline(args: argparse.Namespace, tmp: Path, redis: EmbeddedRedis) -> dict[str, Any]:
    servers = socketio_nodes(redis.url, tmp)
    try:
        await start_socketio_nodes(servers)
        sockets = baseline_setup(_layout_args(args), [s.port for s in servers if s.port])
        return await measure(Variant("socketio", "baseline"), args, sockets, servers, {"redis": [redis.process.pid]})
    finally:
        for server in servers:
            server.stop()


def _layout_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(connections=args.connections, rooms=args.connections // args.room_size, senders=1)


#: Process groups whose CPU a storm reports ("machine": every process, the kernel included).
STORM_CPU_GROUPS = ("nodes", "clients", "postgres", "redis", "relay", "machine")


def report(args: argparse.Namespace, results: list[dict[str, Any]], nofile: int, code: str) -> None:
    print("Parley connection benchmark")
    print(f"code      {code}")
    print(
        f"machine   {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, nofile {nofile}"
    )
    print(
        f"load      {args.connections} idle sockets over 2 nodes, rooms of {args.room_size}, {args.client_procs} "
        f"client process(es), {args.connect_concurrency} connects in flight, client offers permessage-deflate: "
        f"{'yes' if args.deflate else 'no'}\n"
    )
    head = (
        f"{'variant':<16}{'held':>12}{'RSS KiB/conn':>16}{'node RSS MB':>14}{'CPU ms/conn':>12}{'idle CPU%':>10}"
        f"{'connect s':>10}{'open p50/99':>16}{'join p50/99':>15}{'1 join p50/99':>15}{'storm s':>10}{'closes s':>10}"
        f"{'storm open':>16}{'storm join':>15}" + ("  failover s" if args.failover else "")
    )
    print(head + "\n" + "-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<16} failed: {r['error']}")
            continue
        storms = "/".join(f"{s:.1f}" for s in r.get("storm_s", [])) or "-"
        closes = "/".join(f"{s:.1f}" for s in r.get("storm_close_s", [])) or "-"
        line = (
            f"{r['variant']:<16}{r['held']:>6}/{r['connections']:<5}"
            f"{'/'.join(f'{v:.1f}' for v in r['rss_kib']):>16}{'/'.join(f'{v:.0f}' for v in r['rss_mb']):>14}"
            f"{r['connect_cpu_ms']:>12.2f}{r['idle_cpu']:>10.1f}{r['connect_s']:>10.1f}{_ms(r['open']):>16}{_ms(r['join']):>15}{_ms(r.get('probe_join')):>15}"
            f"{storms:>10}{closes:>10}{_ms(r.get('storm_open')):>16}{_ms(r.get('storm_join')):>15}"
        )
        if args.failover:
            line += f"  {r.get('failover_s', 0):.1f} ({r.get('failover_moved', 0)} moved)"
        print(line)
    print(
        "\nRSS KiB/conn = growth of each node's RSS while connecting / sockets on that node (node 1/node 2);"
        "\nCPU ms/conn = both nodes' CPU over the connect phase / sockets joined; idle CPU% = both nodes while"
        "\nholding the sockets, nothing sent (100 = one core); open = WebSocket handshake"
        "\n(baseline: + Engine.IO and namespace open), join = join -> joined (baseline: join event -> ack), in ms,"
        "\nwhile all connect (--connect-concurrency in flight); 1 join = a join on a held socket, one at a time per"
        "\nclient process, every socket held;"
        "\nstorm s = from every client dropping its socket to the last rejoin, per storm round; closes s = of"
        "\nwhich the close handshakes (each client process closes all its sockets, then reconnects them)."
    )
    print("\nCPU % during the (last) storm, 100 = one core, from the drop to the last rejoin:")
    print(f"{'variant':<16}" + "".join(f"{g:>10}" for g in STORM_CPU_GROUPS))
    for r in results:
        if "storm_cpu" in r:
            print(f"{r['variant']:<16}" + "".join(f"{r['storm_cpu'].get(g, 0):>10.0f}" for g in STORM_CPU_GROUPS))
    for r in results:
        notes = {k: r[k] for k in ("failed", "errors", "storm_failed", "storm_errors", "failover_failed") if r.get(k)}
        if notes:
            print(f"{r['variant']}: {notes}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.connections", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="idle sockets, split over two nodes")
    parser.add_argument("--room-size", type=int, default=10, help="sockets per room (rooms span both nodes)")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes")
    parser.add_argument("--connect-concurrency", type=int, default=200, help="connects in flight (all processes)")
    parser.add_argument("--probe", type=int, default=400, help="joins timed one at a time on held sockets")
    parser.add_argument("--storms", type=int, default=1, help="reconnect storms after the hold")
    parser.add_argument("--failover", action="store_true", help="then kill -9 node 1; its clients move to node 2")
    parser.add_argument(
        "--no-deflate", dest="deflate", action="store_false", help="the clients do not offer permessage-deflate"
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        help="a Parley server variant NAME[=TOKENS] (repeatable; default: one named 'parley' as configured)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy node 1 of each variant (raw stacks into this directory)")
    parser.add_argument("--skip-baseline", action="store_true", help="Parley variants only")
    args = parser.parse_args(argv)
    variants: list[Variant] = args.variant or [Variant("parley", "parley")]
    nofile, code = raise_nofile(), revision()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-conns-") as name:
        tmp = Path(name)
        redis = start_redis(tmp / "redis")
        pg: EmbeddedPostgres | None = None
        try:
            from infrastructure.migrate import upgrade_head

            pg = start_postgres(tmp / "pg")
            pg.create_database("bench")
            upgrade_head(pg.url("bench"))

            async def run() -> None:
                if not args.skip_baseline:
                    results.append(await run_baseline(args, tmp, redis))
                    gc.collect()
                for variant in variants:
                    assert pg is not None
                    try:
                        results.append(await run_parley(variant, args, tmp, pg, redis))
                    except Exception as exc:  # one broken variant does not cost the others their numbers
                        print(f"variant {variant.name} failed: {exc!r}", file=sys.stderr)
                        results.append(
                            {
                                "variant": variant.name,
                                "connections": args.connections,
                                "held": 0,
                                "failed": args.connections,
                                "error": repr(exc)[:300],
                            }
                        )

            run_loop(run())
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        finally:
            for log in sorted(tmp.glob("*.log")):
                lines = log.read_text(errors="replace").strip().splitlines()
                if any(w in line for line in lines for w in ("ERROR", "CRITICAL", "Traceback")):
                    print(f"--- {log.name}: {len(lines)} log lines, last ones:\n" + "\n".join(lines[-10:]))
            redis.stop()
            if pg is not None:
                pg.stop()
    report(args, results, nofile, code)
    bad = any(r["failed"] or r.get("storm_failed") for r in results if r["variant"] != "socketio")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
