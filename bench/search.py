"""Search and embedding benchmark: model throughput, the worker's pace, and search latency at 100k messages.

Three parts, each against a baseline measured in the same run:

1. **Embedding runtimes** (one child process per runtime, so load time and RSS are its own): load time,
   embeddings/s with one text per call (the quiet worker) and in batches of 64 (the busy worker), RSS.
   numpy (default) always; torch (sentence-transformers) when installed. Max abs difference of their
   vectors on the same texts.
2. **Worker pace**: `parley relay` + `parley worker` processes; this process posts messages through the
   real write path at ``--rate`` msg/s for ``--seconds``; sampled every 0.25 s: how many have a vector.
   Reports throughput, backlog, and the lag from post to vector (p50/p99, by order of arrival).
3. **Search latency**: ``--messages`` rows (default 100,000) inserted directly (COPY) with vectors
   generated around real sentence embeddings, then ``infrastructure.search.queries.search`` per mode
   for a typical viewer (member of ~20 conversations) and a heavy viewer (member of all), with the
   indexes (HNSW, GIN, b-tree) and with the sequential-scan plan (index scans disabled) as baseline.
   Semantic recall of the indexed path is measured against the exact baseline.

    .venv/bin/python -m bench.search                       # everything, embedded PostgreSQL and Redis
    .venv/bin/python -m bench.search --messages 20000 --seconds 10 --rate 100
    .venv/bin/python -m bench.search --skip-worker --skip-runtimes

Latencies are of the SQL search (query vector precomputed); the query's embedding time is printed
apart (single-text p50/p99), add it for the end-to-end figure of semantic and hybrid search.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import psutil

from infrastructure.embedded import start_postgres, start_redis
from infrastructure.migrate import upgrade_head
from infrastructure.settings import async_database_url

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


# -- 3. search latency at scale ---------------------------------------------------------------------------


async def embed_pool(sentences: list[str]) -> np.ndarray:
    from infrastructure.embeddings.provider import Embedder
    from infrastructure.settings import EmbeddingSettings

    embedder = Embedder(EmbeddingSettings())
    vectors = []
    for i in range(0, len(sentences), 64):
        vectors += await embedder.embed(sentences[i : i + 64])
    return np.array(vectors, dtype=np.float32)


async def load_corpus(dsn: str, messages: int, per_conversation: int = 100) -> dict[str, Any]:
    from pgvector.asyncpg import register_vector

    rng = random.Random(11)
    np_rng = np.random.default_rng(11)
    pool_sentences = sorted({f"{s} {v} {t}" for s in SUBJECTS for v in VERBS for t in TIMES})
    rng.shuffle(pool_sentences)
    pool_sentences = pool_sentences[:600]
    t = time.perf_counter()
    pool_vectors = await embed_pool(pool_sentences)
    print(f"embedded {len(pool_sentences)} seed sentences in {time.perf_counter() - t:.1f}s")
    vocabulary = [f"{a}{b}" for a in ("ka", "lo", "mi", "su", "te", "ro", "va", "ni") for b in range(400)]
    conv_count = max(1, messages // per_conversation)
    users = [uuid.uuid4() for _ in range(max(20, conv_count // 5))]
    heavy, typical = users[0], users[1]
    conversations = [uuid.uuid4() for _ in range(conv_count)]
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    t = time.perf_counter()
    await conn.executemany(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'u', 'x')",
        [(u, f"{u}@bench") for u in users],
    )
    await conn.executemany(
        "INSERT INTO conversations (id, title, owner_id, last_seq) VALUES ($1, $2, $3, $4)",
        [(c, f"room {i}", rng.choice(users[1:]), per_conversation) for i, c in enumerate(conversations)],
    )
    members = set()
    for i, c in enumerate(conversations):
        members.add((c, heavy))
        for u in rng.sample(users[1:], 4):
            members.add((c, u))
        if i % max(1, conv_count // 20) == 0:
            members.add((c, typical))
    await conn.copy_records_to_table("participants", records=list(members), columns=["conversation_id", "user_id"])
    await conn.execute("DROP INDEX ix_messages_embedding; DROP INDEX ix_messages_search")
    rows = []
    for c in conversations:
        for seq in range(1, per_conversation + 1):
            k = rng.randrange(len(pool_sentences))
            text = f"{pool_sentences[k]} {' '.join(rng.choices(vocabulary, k=3))}"
            vector = pool_vectors[k] + np_rng.normal(0, 0.02, 384).astype(np.float32)
            rows.append((uuid.uuid4(), c, seq, "user", text, vector / np.linalg.norm(vector)))
            if len(rows) >= 10_000:
                await conn.copy_records_to_table(
                    "messages", records=rows, columns=["id", "conversation_id", "seq", "role", "text", "embedding"]
                )
                rows = []
    if rows:
        await conn.copy_records_to_table(
            "messages", records=rows, columns=["id", "conversation_id", "seq", "role", "text", "embedding"]
        )
    print(f"inserted {conv_count * per_conversation} messages in {time.perf_counter() - t:.1f}s")
    await conn.execute("SET maintenance_work_mem = '1GB'")
    t = time.perf_counter()
    await conn.execute("CREATE INDEX ix_messages_search ON messages USING gin (search)")
    gin_s = time.perf_counter() - t
    t = time.perf_counter()
    await conn.execute(
        "CREATE INDEX ix_messages_embedding ON messages USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)"
    )
    hnsw_s = time.perf_counter() - t
    await conn.execute("VACUUM ANALYZE")
    await conn.close()
    print(f"GIN index {gin_s:.1f}s, HNSW index {hnsw_s:.1f}s")
    return {"heavy": heavy, "typical": typical, "vocabulary": vocabulary, "gin_s": gin_s, "hnsw_s": hnsw_s}


async def search_latency(dsn: str, corpus: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    from infrastructure.embeddings.provider import Embedder, to_pgvector
    from infrastructure.search.queries import Mode, SearchRequest, search
    from infrastructure.settings import EmbeddingSettings

    embedder = Embedder(EmbeddingSettings())
    await embedder.ready()
    rng = random.Random(5)
    queries = QUERIES + [f"{w}" for w in rng.sample(corpus["vocabulary"], 10)]
    embed_ms = []
    vectors = {}
    for q in queries * 3:
        t = time.perf_counter()
        vectors[q] = to_pgvector(await embedder.embed_one(q))
        embed_ms.append(1000 * (time.perf_counter() - t))
    print(f"query embedding (1 text): p50 {pct(embed_ms, 50):.1f} ms, p99 {pct(embed_ms, 99):.1f} ms")
    indexed = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    seqscan = await asyncpg.create_pool(
        dsn,
        min_size=2,
        max_size=2,
        server_settings={"enable_indexscan": "off", "enable_bitmapscan": "off", "enable_indexonlyscan": "off"},
    )
    results = []
    for viewer in ("typical", "heavy"):
        for mode in (Mode.TEXT, Mode.SEMANTIC, Mode.HYBRID):
            row: dict[str, Any] = {"viewer": viewer, "mode": str(mode)}
            found: dict[str, dict[str, list[Any]]] = {}
            for plan, pool in (("indexed", indexed), ("seqscan", seqscan)):
                times, found[plan] = [], {}
                runs = repeats if plan == "indexed" else max(10, repeats // 5)
                for i in range(runs + len(queries)):
                    q = queries[i % len(queries)]
                    request = SearchRequest(viewer_id=corpus[viewer], query=q, mode=mode, limit=20, vector=vectors[q])
                    t = time.perf_counter()
                    hits, _ = await search(pool, request)
                    if i >= len(queries):  # the first pass over the queries is warm-up
                        times.append(1000 * (time.perf_counter() - t))
                    found[plan][q] = [h.message.id for h in hits]
                row[f"{plan}_p50"], row[f"{plan}_p99"] = round(pct(times, 50), 1), round(pct(times, 99), 1)
            overlap = [
                len(set(found["indexed"][q]) & set(found["seqscan"][q])) / max(1, len(found["seqscan"][q]))
                for q in queries
                if found["seqscan"][q]
            ]
            row["agreement"] = round(statistics.mean(overlap), 3) if overlap else None
            results.append(row)
            print(
                f"{viewer:8} {mode!s:9} indexed p50 {row['indexed_p50']:>7} p99 {row['indexed_p99']:>7} ms | "
                f"seq-scan p50 {row['seqscan_p50']:>7} p99 {row['seqscan_p99']:>7} ms | "
                f"top-20 agreement {row['agreement']}",
                flush=True,
            )
    await indexed.close()
    await seqscan.close()
    return results


async def run(
    args: argparse.Namespace, database_url: str, worker_url: str, redis_url: str, tmp: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}}
    if not args.skip_runtimes:
        print("== embedding runtimes ==")
        out["runtimes"] = [{k: v for k, v in r.items() if k != "vectors"} for r in runtimes()]
    if not args.skip_worker:
        print(f"== worker pace: {args.rate} msg/s for {args.seconds}s, {args.workers} worker process(es) ==")
        out["worker"] = await worker_pace(worker_url, redis_url, args.rate, args.seconds, args.workers, tmp)
        print(json.dumps(out["worker"]))
    print(f"== search over {args.messages} messages ==")
    corpus = await load_corpus(database_url.replace("postgresql+asyncpg://", "postgresql://"), args.messages)
    out["index_build_s"] = {"gin": round(corpus["gin_s"], 1), "hnsw": round(corpus["hnsw_s"], 1)}
    out["search"] = await search_latency(
        database_url.replace("postgresql+asyncpg://", "postgresql://"), corpus, args.repeats
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=200, help="timed searches per mode and viewer")
    parser.add_argument("--rate", type=int, default=200, help="worker pace: messages per second posted")
    parser.add_argument("--seconds", type=int, default=15, help="worker pace: how long to post")
    parser.add_argument("--workers", type=int, default=1, help="worker pace: worker processes")
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument("--skip-runtimes", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON line")
    parser.add_argument("--probe-runtime", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_runtime:
        print(json.dumps(probe_runtime(args.probe_runtime)))
        return 0
    with tempfile.TemporaryDirectory(prefix="parley-bench-search-") as tmp_name:
        tmp = Path(tmp_name)
        pg = start_postgres(tmp / "pg")
        redis = start_redis(tmp / "redis")
        try:
            name = f"bench_search_{os.getpid()}"
            for db in (name, name + "_worker"):
                pg.create_database(db)
                upgrade_head(async_database_url(pg.url(db)))
            results = asyncio.run(run(args, pg.url(name), pg.url(name + "_worker"), redis.url, tmp))
        finally:
            redis.stop()
            pg.stop()
    if args.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
