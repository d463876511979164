"""File-search quality on SciFact (BEIR test split), through the public API.

One file per abstract (`<doc id>.txt`: title, blank line, text) goes into one vector store with
file batches; then each of the 300 test queries is searched with `max_num_results=10`, and
nDCG@10 and Recall@10 are computed from the qrels (binary relevance, files de-duplicated).

    .venv/bin/python -m bench.scifact                         # starts everything in a temp dir
    .venv/bin/python -m bench.scifact --base-url http://127.0.0.1:8000/v1   # a running system
    .venv/bin/python -m bench.scifact --base-url ... --store vs_...         # search only

The data is read from ../shared/data/scifact (see its SOURCE.md); nothing is copied.
"""

import argparse
import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI

from bench.harness import percentile, running
from tests.system import API_KEY

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
BATCH = 500


def load(data: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """Corpus texts by id, queries by id, relevant doc ids by query id."""
    corpus = {}
    for line in (data / "corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        corpus[doc["_id"]] = f"{doc['title']}\n\n{doc['text']}"
    queries = {}
    for line in (data / "queries.jsonl").read_text().splitlines():
        query = json.loads(line)
        queries[query["_id"]] = query["text"]
    qrels: dict[str, set[str]] = {}
    for line in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, score = line.split("\t")
        if int(score) > 0:
            qrels.setdefault(query_id, set()).add(doc_id)
    return corpus, queries, qrels


def ndcg_at_10(ranked: list[str], relevant: set[str]) -> float:
    """Binary-relevance nDCG@10."""
    gain = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return gain / ideal if ideal else 0.0


def ingest(client: OpenAI, corpus: dict[str, str], workers: int) -> tuple[str, float]:
    """Upload every abstract and index it in one store; returns its id and the seconds taken."""
    started = time.monotonic()
    store = client.vector_stores.create(name="scifact")

    def upload(item: tuple[str, str]) -> str:
        doc_id, text = item
        return client.files.create(file=(f"{doc_id}.txt", text.encode()), purpose="assistants").id

    with ThreadPoolExecutor(workers) as pool:
        file_ids = list(pool.map(upload, corpus.items()))
    uploaded = time.monotonic()
    print(f"uploaded {len(file_ids)} files in {uploaded - started:.1f} s", flush=True)
    for start in range(0, len(file_ids), BATCH):
        client.vector_stores.file_batches.create(
            vector_store_id=store.id, file_ids=file_ids[start : start + BATCH]
        )
    last = ""
    while True:
        counts = client.vector_stores.retrieve(store.id).file_counts
        line = f"indexed {counts.completed}/{counts.total} (failed {counts.failed})"
        if line != last:
            print(f"  {time.monotonic() - started:7.0f} s  {line}", flush=True)
            last = line
        if counts.in_progress == 0 and counts.total == len(file_ids):
            break
        time.sleep(5)
    return store.id, time.monotonic() - started


def evaluate(
    client: OpenAI, store_id: str, queries: dict[str, str], qrels: dict[str, set[str]]
) -> dict[str, float]:
    """nDCG@10, Recall@10 and search latency over the queries that have judgements."""
    ndcgs, recalls, latencies = [], [], []
    for query_id, relevant in qrels.items():
        began = time.perf_counter()
        page = client.vector_stores.search(store_id, query=queries[query_id], max_num_results=10)
        latencies.append((time.perf_counter() - began) * 1000)
        ranked = list(dict.fromkeys(Path(hit.filename).stem for hit in page.data))
        ndcgs.append(ndcg_at_10(ranked, relevant))
        recalls.append(len(set(ranked[:10]) & relevant) / len(relevant))
    return {
        "queries": len(ndcgs),
        "ndcg@10": sum(ndcgs) / len(ndcgs),
        "recall@10": sum(recalls) / len(recalls),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


@contextlib.contextmanager
def _client(base_url: str | None, keep: bool) -> Iterator[OpenAI]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if base_url:
            yield OpenAI(
                base_url=base_url,
                api_key=os.environ.get("THREADBUS_API_KEY", "none"),
                max_retries=5,
                timeout=120,
            )
            return
        with running(keep=keep) as bench:
            yield OpenAI(base_url=bench.system.api_url, api_key=API_KEY, max_retries=5, timeout=120)


def main() -> None:
    """Ingest (unless --store), search, print the figures as one JSON line too."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running Threadbus (else one is started)")
    parser.add_argument("--store", help="an already ingested store: search only")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--upload-workers", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the started system's data")
    args = parser.parse_args()
    corpus, queries, qrels = load(args.data)
    print(f"SciFact: {len(corpus)} abstracts, {len(qrels)} judged queries", flush=True)
    with _client(args.base_url, args.keep) as client:
        figures: dict[str, object] = {}
        store_id = args.store
        if store_id is None:
            store_id, seconds = ingest(client, corpus, args.upload_workers)
            figures |= {"ingest_seconds": round(seconds, 1),
                        "files_per_s": round(len(corpus) / seconds, 2)}  # fmt: skip
        figures |= {"store": store_id, **evaluate(client, store_id, queries, qrels)}
    for key, value in figures.items():
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
