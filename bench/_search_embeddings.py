"""Parts 1 and 2 of ``bench/search.py``: the embedding runtimes side by side, and the worker's pace
against a posted message rate (see that module's docstring and bench/README.md)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = [
    "the database migration",
    "our flight to lisbon",
    "the quarterly report",
    "my cat",
    "the build server",
    "the coffee machine",
    "the new intern",
    "the customer invoice",
    "the team offsite",
    "the release",
    "the wifi in the office",
    "grandma's birthday dinner",
    "the marathon training",
    "the tax return",
    "the kitchen renovation",
    "the concert tickets",
    "the production outage",
    "the garden",
    "the rent",
    "the job interview",
]
VERBS = [
    "is delayed until",
    "was moved to",
    "needs a review before",
    "broke again on",
    "is finally done by",
    "costs more than expected since",
    "got cancelled on",
    "looks great since",
    "should be ready by",
    "is blocked until",
]
TIMES = [
    "monday",
    "friday",
    "next week",
    "tomorrow morning",
    "the end of the month",
    "noon",
    "the weekend",
    "christmas",
    "the next sprint",
    "tonight",
]
QUERIES = [
    "database migration",
    "flight",
    "invoice",
    "cat",
    "outage in production",
    "coffee",
    "when is the release",
    "birthday dinner plans",
    "tax return deadline",
    "the build is broken",
    "my pet is sleeping",
    "travel to portugal",
    "money owed by a client",
    "renovating the kitchen",
    "running a marathon",
    "tickets for the show",
    "internet connection at work",
    "new colleague",
    "plants outside",
    "apartment rent",
]


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


# -- 1. embedding runtimes --------------------------------------------------------------------------------


def probe_runtime(runtime: str) -> dict[str, Any]:
    """Runs in a child process: load, single and batched throughput, RSS; vectors for the diff."""
    from infrastructure.embeddings.local import LocalProvider
    from infrastructure.settings import EmbeddingSettings

    rng = random.Random(7)
    texts = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(TIMES)}" for _ in range(512)]
    provider = LocalProvider(EmbeddingSettings(runtime=runtime))
    rss0 = psutil.Process().memory_info().rss
    started = time.perf_counter()
    asyncio.run(provider.load())
    load = time.perf_counter() - started

    async def measure() -> tuple[float, float, list[list[float]]]:
        await provider.embed(texts[:8])
        t = time.perf_counter()
        for text in texts[:100]:
            await provider.embed([text])
        single = 100 / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(0, len(texts), 64):
            await provider.embed(texts[i : i + 64])
        batched = len(texts) / (time.perf_counter() - t)
        return single, batched, await provider.embed(QUERIES)

    single, batched, vectors = asyncio.run(measure())
    rss = psutil.Process().memory_info().rss
    return {
        "runtime": runtime,
        "load_s": round(load, 2),
        "single_per_s": round(single, 1),
        "batched_per_s": round(batched, 1),
        "rss_mb": round(rss / 2**20),
        "rss_model_mb": round((rss - rss0) / 2**20),
        "vectors": vectors,
    }


def runtimes() -> list[dict[str, Any]]:
    results = []
    for runtime in ("numpy", "torch"):
        if runtime == "torch":
            try:
                import sentence_transformers  # noqa: F401
            except ImportError:
                print("torch runtime: not installed (pip install 'parley[torch]'), skipped")
                continue
        out = subprocess.run(
            [sys.executable, "-m", "bench.search", "--probe-runtime", runtime],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if len(results) == 2:
        diff = np.abs(np.array(results[0]["vectors"]) - np.array(results[1]["vectors"])).max()
        print(f"max |numpy - torch| over {len(QUERIES)} texts: {diff:.2e}")
    print(f"{'runtime':8} {'load s':>7} {'1/call /s':>10} {'64/call /s':>11} {'RSS MB':>7} {'model MB':>9}")
    for r in results:
        print(
            f"{r['runtime']:8} {r['load_s']:>7} {r['single_per_s']:>10} {r['batched_per_s']:>11} "
            f"{r['rss_mb']:>7} {r['rss_model_mb']:>9}"
        )
    return results


# -- 2. the worker's pace ---------------------------------------------------------------------------------


def start_roles(env: dict[str, str], log_dir: Path, workers: int) -> list[subprocess.Popen[bytes]]:
    """The relay first, then ``workers`` worker processes (one consumer group, split between them)."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", role],
            env=env,
            cwd=ROOT,
            stdout=(log_dir / f"{role}-{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for i, role in enumerate(["relay"] + ["worker"] * workers)
    ]


async def worker_pace(
    database_url: str, redis_url: str, rate: int, seconds: int, workers: int, log_dir: Path
) -> dict[str, Any]:
    from domain import handlers
    from domain.limits import Limits
    from infrastructure.bootstrap import bootstrap
    from infrastructure.settings import AuthSettings, DatabaseSettings, RedisSettings, Settings
    from tests.factories import PostMessageFactory, StartConversationFactory

    settings = Settings(
        database=DatabaseSettings(url=database_url, pool_size=20),
        redis=RedisSettings(url=redis_url),
        auth=AuthSettings(jwt_secret="b" * 40),
    )
    services = await bootstrap(settings)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": "b" * 40,
        "PARLEY_LOG_LEVEL": "warning",
    }
    procs = start_roles(env, log_dir, workers)
    try:
        owner = uuid.uuid4()
        await services.pg.execute(
            "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'b', 'x')", owner, f"{owner}@bench"
        )
        convs = [
            (
                await handlers.start_conversation(
                    StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
                )
            ).id
            for _ in range(20)
        ]
        await asyncio.sleep(6)  # worker: model loaded, groups created
        worker_ps = [psutil.Process(p.pid) for p in procs[1:]]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in worker_ps)
        rng = random.Random(3)
        total = rate * seconds
        posted_at: list[float] = []
        samples: list[tuple[float, int]] = []
        start = time.perf_counter()

        async def post(i: int) -> None:
            cmd = PostMessageFactory.build(
                conversation_id=convs[i % len(convs)],
                sender_id=owner,
                text=f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(TIMES)} #{i}",
            )
            await handlers.post_message(cmd, services.uow(), services.clock, Limits())
            posted_at.append(time.perf_counter() - start)

        async def sample() -> None:
            while True:
                count = await services.pg.fetchval("SELECT count(*) FROM messages WHERE embedding IS NOT NULL")
                samples.append((time.perf_counter() - start, int(count)))
                if count >= total:
                    return
                if time.perf_counter() - start > seconds + 180:
                    return
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        tasks = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
        posting_s = time.perf_counter() - start
        await sampler
        cpu1 = sum(sum(p.cpu_times()[:2]) for p in worker_ps)
        rss = sum(p.memory_info().rss for p in worker_ps)
        done_s = samples[-1][0]
        posted_at.sort()
        lags = []
        for k in range(1, total + 1, max(1, total // 400)):
            reached = next((t for t, c in samples if c >= k), None)
            if reached is not None:
                lags.append(reached - posted_at[k - 1])
        backlog = max(int(rate * t) - c for t, c in samples if t <= posting_s) if samples else 0
        return {
            "rate": rate,
            "messages": total,
            "posting_s": round(posting_s, 1),
            "all_embedded_s": round(done_s, 1),
            "embedded": samples[-1][1],
            "throughput_per_s": round(samples[-1][1] / done_s, 1),
            "lag_p50_s": round(pct(lags, 50), 2),
            "lag_p99_s": round(pct(lags, 99), 2),
            "max_backlog": backlog,
            "workers": workers,
            "worker_cpu_s": round(cpu1 - cpu0, 1),
            "worker_rss_mb": round(rss / 2**20),
        }
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        await services.close()
