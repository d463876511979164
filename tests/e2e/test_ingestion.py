"""User stories of ingestion: every format, failures, cancel, crashes, sharing, events on Kafka."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.documents import docx, pdf
from tests.kafka_tap import KafkaTap
from tests.system import API_KEY, HEADERS, System, answers, wait_until

FORMATS = {
    "notes.txt": b"Plain text about the aurora borealis over Tromso.",
    "guide.md": b"# Guide\n\nMarkdown about **photosynthesis** in chloroplasts.",
    "page.html": b"<html><head><style>.x{}</style><script>var hidden='zanzibar';</script></head>"
    b"<body><h1>Volcanoes</h1><p>Basalt &amp; magma under Iceland.</p></body></html>",
    "data.json": json.dumps({"topic": "glaciers", "facts": ["ice flows downhill"]}).encode(),
    "script.py": b"def fibonacci(n):\n    '''Return the nth Fibonacci number.'''\n    return n\n",
    "paper.pdf": pdf([["Quantum entanglement links particle states."], ["Bell inequalities."]]),
    "memo.docx": docx(["Memo about the tectonic plates.", "Subduction zones make trenches."]),
}
UNIQUE = {
    "notes.txt": "aurora borealis",
    "guide.md": "photosynthesis chloroplasts",
    "page.html": "basalt magma Iceland",
    "data.json": "glaciers",
    "script.py": "Fibonacci number",
    "paper.pdf": "quantum entanglement",
    "memo.docx": "subduction trenches",
}


def _store_with(
    client: OpenAI, files: dict[str, bytes], **options: object
) -> tuple[str, dict[str, str]]:
    store = client.vector_stores.create(name="ingest", **options)  # type: ignore[arg-type]
    ids = {name: client.files.create(file=(name, data), purpose="assistants").id
           for name, data in files.items()}  # fmt: skip
    client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=list(ids.values()), poll_interval_ms=200
    )
    return store.id, ids


def test_every_supported_format_is_parsed_and_searchable(client: OpenAI) -> None:
    store_id, ids = _store_with(client, FORMATS)
    for name, file_id in ids.items():
        indexed = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
        assert indexed.status == "completed", (name, indexed.last_error)
        hits = client.vector_stores.search(store_id, query=UNIQUE[name], max_num_results=1)
        assert hits.data[0].file_id == file_id, name
    html = client.vector_stores.files.content(ids["page.html"], vector_store_id=store_id)
    text = "".join(part.text or "" for part in html.data)
    assert "Basalt & magma" in text
    assert "zanzibar" not in text  # scripts are not content
    memo = client.vector_stores.files.content(ids["memo.docx"], vector_store_id=store_id)
    assert "Subduction zones make trenches." in (memo.data[0].text or "")


def test_broken_and_unsupported_files_fail_with_their_reason(client: OpenAI) -> None:
    broken = {
        "broken.pdf": b"%PDF-1.4 this is not really a pdf",
        "table.csv": b"a,b\n1,2\n",
        "binary.txt": b"text\x00with\x00nul bytes",
    }
    store_id, ids = _store_with(client, broken)
    codes = {
        name: client.vector_stores.files.retrieve(file_id, vector_store_id=store_id).last_error
        for name, file_id in ids.items()
    }
    assert {name: e.code for name, e in codes.items() if e} == {
        "broken.pdf": "invalid_file", "table.csv": "unsupported_file", "binary.txt": "invalid_file"
    }  # fmt: skip
    assert all(e and e.message for e in codes.values())
    counts = client.vector_stores.retrieve(store_id).file_counts
    assert (counts.failed, counts.completed, counts.in_progress) == (3, 0, 0)


@pytest.mark.slow
def test_cancel_a_batch_while_the_indexer_is_paused(client: OpenAI, system: System) -> None:
    indexer = system.services["file_indexer"]
    assert indexer.proc is not None
    store = client.vector_stores.create(name="cancel")
    ids = [client.files.create(file=(f"f{n}.txt", f"Document {n}.".encode()),
                               purpose="assistants").id for n in range(3)]  # fmt: skip
    indexer.proc.send_signal(signal.SIGSTOP)  # frozen: nothing is indexed meanwhile
    try:
        batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
        assert (batch.status, batch.file_counts.in_progress) == ("in_progress", 3)
        cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
        assert cancelled.status == "cancelled"
        assert cancelled.file_counts.cancelled == 3
        polled = client.vector_stores.file_batches.poll(batch.id, vector_store_id=store.id)
        assert polled.file_counts.in_progress == 0
    finally:
        indexer.proc.send_signal(signal.SIGCONT)
    time.sleep(2)  # the indexer is back: it must not index cancelled files
    files = client.vector_stores.files.list(vector_store_id=store.id).data
    assert {f.status for f in files} == {"cancelled"}
    assert client.vector_stores.retrieve(store.id).file_counts.cancelled == 3
    assert (
        system.sql("SELECT count(*) AS n FROM chunks WHERE vector_store_id = $1", store.id)[0]["n"]
        == 0
    )


@pytest.mark.slow
def test_indexer_killed_mid_file_resumes_and_indexes_once(
    client: OpenAI, system: System, tap: KafkaTap
) -> None:
    words = [f"word{n} lorem ipsum dolor sit amet consectetur" for n in range(800)]
    big = client.files.create(file=("big.txt", "\n".join(words).encode()), purpose="assistants")
    store = client.vector_stores.create(name="crash")
    small_chunks = {"type": "static", "static": {"max_chunk_size_tokens": 100,
                                                 "chunk_overlap_tokens": 0}}  # fmt: skip
    client.vector_stores.files.create(
        vector_store_id=store.id,
        file_id=big.id,
        chunking_strategy=small_chunks,  # type: ignore[arg-type]
    )

    def stored() -> int:
        rows = system.sql("SELECT count(*) AS n FROM chunks WHERE file_id = $1", big.id)
        return int(rows[0]["n"])

    wait_until(lambda: stored() > 0, timeout=120, interval=0.05)
    system.services["file_indexer"].kill()  # mid-file: some chunks are written, not all
    before = system.sql(
        "SELECT chunk_index, id FROM chunks WHERE file_id = $1 ORDER BY chunk_index", big.id
    )
    status = client.vector_stores.files.retrieve(big.id, vector_store_id=store.id).status
    assert status == "in_progress"
    system.spawn("file_indexer")
    done = wait_until(
        lambda: (
            (f := client.vector_stores.files.retrieve(big.id, vector_store_id=store.id)).status
            == "completed"
            and f
        ),
        timeout=240,
    )
    after = system.sql(
        "SELECT chunk_index, id FROM chunks WHERE file_id = $1 ORDER BY chunk_index", big.id
    )
    indexes = [r["chunk_index"] for r in after]
    assert indexes == list(range(len(indexes)))  # every chunk once
    assert len(indexes) > len(before)
    kept = {r["chunk_index"]: r["id"] for r in after}
    assert all(kept[r["chunk_index"]] == r["id"] for r in before)  # earlier chunks were kept
    attempts = system.sql("SELECT attempts FROM vector_store_files WHERE file_id = $1", big.id)
    assert attempts[0]["attempts"] == 2
    assert done.usage_bytes > 0
    completions = wait_until(
        lambda: [e for e in tap.events(store.id) if e["type"] == "vector_store.file.completed"]
    )
    assert len(completions) == 1

    # A duplicate order for the finished file (a redelivery) changes nothing.
    tap.publish(
        {"type": "IndexFile", "id": "cmd_duplicate", "vector_store_id": store.id,
         "file_id": big.id, "generation": 1},
        key=store.id,
    )  # fmt: skip
    time.sleep(2)
    assert (
        system.sql(
            "SELECT chunk_index, id FROM chunks WHERE file_id = $1 ORDER BY chunk_index", big.id
        )
        == after
    )
    assert len([e for e in tap.events(store.id) if e["type"] == "vector_store.file.completed"]) == 1


@pytest.mark.slow
def test_two_indexers_share_one_stores_files(client: OpenAI, system: System) -> None:
    second = system.spawn("file_indexer", label="file_indexer-2")
    try:
        # Both are ready before the files come, or the first can index all of them alone.
        wait_until(lambda: system.ready("file_indexer-2"), timeout=90)
        texts = {f"doc{n}.txt": (f"Shared work item {n}. " * 60).encode() for n in range(12)}
        store_id, ids = _store_with(client, texts)
        assert client.vector_stores.retrieve(store_id).file_counts.completed == 12
        logs = {label: system.log(label) for label in ("file_indexer", "file_indexer-2")}
        per_indexer = {
            label: sum(f"indexed {file_id} into {store_id}" in text for file_id in ids.values())
            for label, text in logs.items()
        }
        assert all(n > 0 for n in per_indexer.values()), per_indexer
        assert sum(per_indexer.values()) == 12  # each file indexed by exactly one of them
    finally:
        second.kill()


def test_a_file_uploaded_through_one_api_is_read_through_another(
    client: OpenAI, system: System
) -> None:
    port = system.api_port + 1000
    other = system.spawn("api", label="api-files", THREADBUS_API_PORT=str(port))
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        payload = b"Replicas share the blob store: " + bytes(range(256)) * 10
        made = client.files.create(file=("shared.bin", payload), purpose="vision")
        read = httpx.get(f"http://127.0.0.1:{port}/v1/files/{made.id}/content", headers=HEADERS,
                         timeout=30)  # fmt: skip
        assert read.status_code == 200
        assert read.content == payload
    finally:
        other.stop()


def test_ingestion_transitions_go_out_on_kafka(client: OpenAI, tap: KafkaTap) -> None:
    store_id, ids = _store_with(client, {"k.txt": b"Kafka carries ingestion events."})
    (file_id,) = ids.values()
    events = wait_until(
        lambda: (
            [e for e in tap.events(store_id) if e["type"].startswith("vector_store.file.")]
            if len(tap.events(store_id)) >= 2
            else None
        )
    )
    assert [e["type"] for e in events] == [
        "vector_store.file.in_progress", "vector_store.file.completed"
    ]  # fmt: skip
    assert all(e["subject"] == store_id and e["data"]["id"] == file_id for e in events)
    assert events[-1]["data"]["status"] == "completed"


def test_cli_ingests_a_folder_with_a_progress_bar(
    client: OpenAI, system: System, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("The first note, about comets.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# Second\n\nA note about asteroids.")
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    (tmp_path / ".hidden").write_text("left out")
    done = subprocess.run(
        [sys.executable, "-m", "services.core.cli", "ingest", str(tmp_path), "--name", "notes",
         "--base-url", system.api_url],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "THREADBUS_API_KEY": API_KEY},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one file could not be indexed
    store_id = done.stdout.strip()
    assert store_id.startswith("vs_")
    assert "uploaded  [" in done.stderr
    assert "indexed   [##############################] 3/3, 1 failed" in done.stderr
    store = client.vector_stores.retrieve(store_id)
    assert store.name == "notes"
    assert (store.file_counts.completed, store.file_counts.failed) == (2, 1)
    hits = client.vector_stores.search(store_id, query="asteroids", max_num_results=1)
    assert hits.data[0].filename == "b.md"
