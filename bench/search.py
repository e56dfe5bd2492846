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
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench._search_embeddings import QUERIES, SUBJECTS, TIMES, VERBS, pct, probe_runtime, runtimes, worker_pace
from infrastructure.embedded import start_postgres, start_redis
from infrastructure.migrate import upgrade_head
from infrastructure.settings import async_database_url

ROOT = Path(__file__).resolve().parents[1]

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
            found: dict[str, dict[str, list[Any]]] = {"indexed_d": {}, "seqscan_d": {}}
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
                    found[plan + "_d"][q] = [h.distance for h in hits]
                row[f"{plan}_p50"], row[f"{plan}_p99"] = round(pct(times, 50), 1), round(pct(times, 99), 1)
            overlap = [
                len(set(found["indexed"][q]) & set(found["seqscan"][q])) / max(1, len(found["seqscan"][q]))
                for q in queries
                if found["seqscan"][q]
            ]
            row["agreement"] = round(statistics.mean(overlap), 3) if overlap else None
            # Near-tie aware: the i-th indexed hit is as close as the i-th exact one (within 0.01).
            close = [
                statistics.mean(a - b <= 0.01 for a, b in zip(found["indexed_d"][q], exact, strict=False))
                for q in queries
                if (exact := found["seqscan_d"][q]) and mode is Mode.SEMANTIC
            ]
            row["distance_recall"] = round(statistics.mean(close), 3) if close else None
            results.append(row)
            print(
                f"{viewer:8} {mode!s:9} indexed p50 {row['indexed_p50']:>7} p99 {row['indexed_p99']:>7} ms | "
                f"seq-scan p50 {row['seqscan_p50']:>7} p99 {row['seqscan_p99']:>7} ms | "
                f"top-20 agreement {row['agreement']}, distance recall {row['distance_recall']}",
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
