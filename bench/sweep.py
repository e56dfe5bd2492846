"""Fan-out latency against offered rate: ``bench.fanout`` at several rates, Parley and the baseline(s).

Each rate is a fresh ``python -m bench.fanout --json`` (new servers, new PostgreSQL and Redis), so one
run cannot warm or tire the next; within it the Socket.IO baseline and Parley run on the same
machine, one after the other. It prints one table (delivery and ack percentiles, CPU per message,
loss/duplicates/order per rate) and with ``--out`` writes every run's JSON, which ``bench.plot``
turns into the delivery-latency-vs-rate figure of docs/perf/.

    .venv/bin/python -m bench.sweep --rates 200,500,1000 --out docs/perf/fanout-sweep.json -- --durable-baseline
    .venv/bin/python -m bench.sweep --rates 200 --duration 5 -- --connections 200 --rooms 20 --senders 20

Arguments after ``--`` go to every ``bench.fanout`` run. Exit code 1 if Parley lost, duplicated or
reordered anything at any rate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.fanout import KINDS


def run_fanout(rate: float, duration: float, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.fanout", "--rate", f"{rate:g}", "--duration", f"{duration:g}", "--json", *extra]
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"bench.fanout at {rate:g} msg/s printed no result (exit {done.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    result["table"] = done.stdout[: done.stdout.rfind(lines[-1])]
    return result


def _p(values: list[float] | None, i: int) -> str:
    return "-" if not values else f"{values[i]:.1f}"


def table(runs: list[dict[str, Any]]) -> str:
    head = (
        f"{'rate':>6}  {'server':<9}{'delivery p50':>13}{'p95':>8}{'p99':>9}{'ack p50':>9}{'p99':>9}"
        f"{'CPU ms/msg':>11}{'nodes CPU%':>11}{'loss':>6}{'dup':>5}{'order':>6}"
    )
    out = [head, "-" * len(head)]
    for run in runs:
        rate = run["params"]["rate"]
        for kind in KINDS:
            s = run.get(kind)
            if s is None:
                continue
            out.append(
                f"{rate:>6g}  {kind:<9}{_p(s['delivery_ms'], 0):>13}{_p(s['delivery_ms'], 1):>8}"
                f"{_p(s['delivery_ms'], 2):>9}{_p(s['ack_ms'], 0):>9}{_p(s['ack_ms'], 2):>9}"
                f"{s['cpu_ms_per_message']:>11.2f}{s['cpu_pct']['nodes']:>11.0f}{s['loss']:>6}{s['duplicates']:>5}"
                f"{s['out_of_order']:>6}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,500,1000", help="comma-separated msg/s, one fresh run each")
    parser.add_argument("--duration", type=float, default=20, help="seconds of sending per run")
    parser.add_argument("--out", type=Path, help="write every run's JSON here (for bench.plot)")
    args = parser.parse_args(argv)
    runs = []
    started = time.monotonic()
    for rate in (float(r) for r in args.rates.split(",")):
        runs.append(run_fanout(rate, args.duration, extra))
        print(runs[-1]["table"], flush=True)
    print(f"\nsweep: {len(runs)} runs in {time.monotonic() - started:.0f} s; delivery and ack in ms\n")
    print(table(runs))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([{k: v for k, v in r.items() if k != "table"} for r in runs], indent=1))
    bad = [r for r in runs if (p := r.get("parley")) and (p["loss"] or p["duplicates"] or p["out_of_order"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
