"""Figures for docs/perf/ from ``bench.sweep --out`` JSON: delivery latency against offered rate.

    .venv/bin/python -m bench.plot docs/perf/fanout-sweep.json --out docs/perf/delivery-vs-rate.svg

One panel per percentile (p50, p99), Parley and the Socket.IO baseline (and its durable variant, when
the sweep ran it) as lines, log-scaled latency (the tails span orders of magnitude). Needs matplotlib
(the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

STYLE = {
    "parley": ("#1f6feb", "o", "Parley (durable, ordered)"),
    "baseline": ("#d1242f", "s", "Socket.IO + Redis"),
    "durable": ("#9a6700", "^", "Socket.IO + INSERT before emit"),
}


def plot(runs: list[dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    runs = sorted(runs, key=lambda r: r["params"]["rate"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (index, label) in zip(axes, ((0, "p50"), (2, "p99")), strict=True):
        for kind, (color, marker, name) in STYLE.items():
            points = [(r["params"]["rate"], r[kind]["delivery_ms"][index]) for r in runs if r.get(kind)]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, color=color, marker=marker, label=name)
                for x, y in points:
                    ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_title(f"delivery latency {label}")
        ax.set_xlabel("offered load, messages/s")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (send due -> message frame on every socket)")
    axes[0].legend()
    params = runs[0]["params"]
    fig.suptitle(
        f"{title}: {params['connections']} sockets on 2 nodes, rooms of "
        f"{-(-params['connections'] // params['rooms'])}, {params['duration']:g} s per rate, one machine "
        f"({runs[0]['machine']['cpus']} cores)",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="JSON written by bench.sweep --out")
    parser.add_argument("--out", type=Path, required=True, help="figure file (.svg or .png)")
    parser.add_argument("--title", default="WebSocket fan-out", help="figure title")
    args = parser.parse_args(argv)
    plot(json.loads(args.sweep.read_text()), args.out, args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
