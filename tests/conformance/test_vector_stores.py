"""Scenarios 56-60: vector stores, their files and batches, and search, through the strict SDK."""

import openai
import pytest
from openai import OpenAI

from tests.system import wait_until

STATIC_800_400 = {
    "type": "static",
    "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
}

DOCS = {
    "kafka.md": "# Ordering\nKafka keeps the order of records within one partition, so events"
    " keyed by thread id stay in order.",
    "postgres.txt": "Postgres is the source of truth. Every state change is a transaction that"
    " also writes an outbox row.",
    "errors.txt": "Error E-4711 means the broker refused a record that was too large.",
    "cooking.txt": "Simmer the tomatoes with garlic and basil for twenty minutes.",
}


def _upload(client: OpenAI, name: str, text: str | None = None) -> str:
    return client.files.create(file=(name, (text or DOCS[name]).encode()), purpose="assistants").id


def test_create_with_files_then_completed(client: OpenAI) -> None:
    f1, f2 = _upload(client, "kafka.md"), _upload(client, "postgres.txt")
    store = client.vector_stores.create(name="kb", file_ids=[f1, f2], metadata={"team": "core"})
    assert store.object == "vector_store"
    assert store.id.startswith("vs_")
    assert store.status in ("in_progress", "completed")
    assert store.file_counts.total == 2
    done = wait_until(
        lambda: (s := client.vector_stores.retrieve(store.id)).status == "completed" and s, 120
    )
    assert done.file_counts.model_dump() == {
        "in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0, "total": 2,
    }  # fmt: skip
    assert done.usage_bytes > 0
    assert done.metadata == {"team": "core"}
    assert done.last_active_at is not None
    assert store.id in [s.id for s in client.vector_stores.list()]


def test_create_and_poll_a_file_and_chunking_validation(client: OpenAI) -> None:
    store = client.vector_stores.create(name="kb")
    f3 = _upload(client, "errors.txt")
    attached = client.vector_stores.files.create_and_poll(file_id=f3, vector_store_id=store.id)
    assert attached.id == f3
    assert attached.object == "vector_store.file"
    assert attached.status == "completed"
    assert attached.chunking_strategy is not None
    assert attached.chunking_strategy.model_dump() == STATIC_800_400
    assert attached.usage_bytes > 0
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1

    for bad in ({"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 60},
                {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 400},
                {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}):  # fmt: skip
        with pytest.raises(openai.BadRequestError) as caught:
            client.vector_stores.files.create(
                vector_store_id=store.id,
                file_id=f3,
                chunking_strategy={"type": "static", "static": bad},  # type: ignore[typeddict-item]
            )
        assert "chunking_strategy" in str(caught.value.body["param"])  # type: ignore[index]
    small = client.vector_stores.files.create_and_poll(
        file_id=_upload(client, "kafka.md"),
        vector_store_id=store.id,
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100,
                                                        "chunk_overlap_tokens": 50}},
    )  # fmt: skip
    assert small.status == "completed"
    assert small.chunking_strategy.model_dump()["static"]["max_chunk_size_tokens"] == 100  # type: ignore[union-attr]


def test_upload_and_poll_helpers(client: OpenAI) -> None:
    store = client.vector_stores.create(name="helpers")
    one = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("kafka.md", DOCS["kafka.md"].encode())
    )
    assert one.status == "completed"
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[(name, DOCS[name].encode()) for name in ("postgres.txt", "errors.txt")],
    )
    assert batch.object == "vector_store.files_batch"
    assert batch.status == "completed"
    assert batch.file_counts.completed == 2
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 3


def test_unsupported_file_fails_with_its_reason(client: OpenAI) -> None:
    store = client.vector_stores.create(name="png")
    png = client.files.create(
        file=("pixel.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 32), purpose="assistants"
    )
    failed = client.vector_stores.files.create_and_poll(file_id=png.id, vector_store_id=store.id)
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert failed.last_error.code == "unsupported_file"
    assert failed.usage_bytes == 0
    after = client.vector_stores.retrieve(store.id)
    assert (after.file_counts.failed, after.status) == (1, "completed")
    listed = client.vector_stores.files.list(vector_store_id=store.id, filter="failed")
    assert [f.id for f in listed.data] == [png.id]
    assert client.vector_stores.files.list(vector_store_id=store.id, filter="completed").data == []


def test_batches_create_list_and_search_filters(client: OpenAI) -> None:
    store = client.vector_stores.create(name="filters")
    a, b = _upload(client, "kafka.md"), _upload(client, "cooking.txt")
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id,
        files=[
            {"file_id": a, "attributes": {"lang": "en", "year": 2024, "public": True}},
            {"file_id": b, "attributes": {"lang": "it", "year": 2019, "public": False}},
        ],
    )
    assert (batch.status, batch.file_counts.completed) == ("completed", 2)
    assert batch.id.startswith("vsfb_")
    assert client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id) == batch
    files = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {f.id for f in files.data} == {a, b}

    updated = client.vector_stores.files.update(
        a, vector_store_id=store.id, attributes={"lang": "en", "year": 2025, "public": True}
    )
    assert updated.attributes == {"lang": "en", "year": 2025, "public": True}

    def hits(**filters: object) -> set[str]:
        page = client.vector_stores.search(
            store.id,
            query="order of records",
            filters=filters,
            max_num_results=3,  # type: ignore[arg-type]
        )
        assert page.object == "vector_store.search_results.page"
        assert len(page.data) <= 3
        scores = [h.score for h in page.data]
        assert scores == sorted(scores, reverse=True)
        assert all(0 <= s <= 1 for s in scores)
        assert all(h.content[0].type == "text" for h in page.data)
        return {h.file_id for h in page.data}

    assert hits(type="eq", key="lang", value="en") == {a}
    assert hits(type="ne", key="lang", value="en") == {b}
    assert hits(type="gte", key="year", value=2025) == {a}
    assert hits(type="lt", key="year", value=2025) == {b}
    assert hits(type="in", key="lang", value=["it", "fr"]) == {b}
    assert hits(type="nin", key="lang", value=["it", "fr"]) == {a}
    assert hits(type="eq", key="public", value=False) == {b}
    both = {"type": "or", "filters": [{"type": "eq", "key": "lang", "value": "it"},
                                      {"type": "gt", "key": "year", "value": 2024}]}  # fmt: skip
    assert hits(**both) == {a, b}
    neither = {"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "it"},
                                         {"type": "gt", "key": "year", "value": 2024}]}  # fmt: skip
    assert hits(**neither) == set()


def test_search_ranks_exact_tokens_and_paraphrases(client: OpenAI) -> None:
    names = list(DOCS)
    ids = {name: _upload(client, name) for name in names}
    store = client.vector_stores.create(name="ranked", file_ids=list(ids.values()))
    wait_until(lambda: client.vector_stores.retrieve(store.id).status == "completed", 120)
    exact = client.vector_stores.search(store.id, query="E-4711")
    assert exact.data[0].file_id == ids["errors.txt"]
    assert exact.search_query == ["E-4711"]
    paraphrase = client.vector_stores.search(store.id, query="how is message order kept?")
    assert paraphrase.data[0].file_id == ids["kafka.md"]
    assert paraphrase.data[0].filename == "kafka.md"
    several = client.vector_stores.search(store.id, query=["tomato sauce", "source of truth"])
    assert {ids["cooking.txt"], ids["postgres.txt"]} <= {h.file_id for h in several.data[:2]}
    strict = client.vector_stores.search(
        store.id, query="E-4711", ranking_options={"score_threshold": 0.99}
    )
    assert 1 <= len(strict.data) < len(exact.data)
    assert all(h.score >= 0.99 for h in strict.data)


def test_file_content_update_delete_and_store_delete(client: OpenAI) -> None:
    store = client.vector_stores.create(name="lifecycle")
    f = _upload(client, "postgres.txt")
    client.vector_stores.files.create_and_poll(file_id=f, vector_store_id=store.id)
    content = client.vector_stores.files.content(f, vector_store_id=store.id)
    assert content.data[0].type == "text"
    assert "source of truth" in (content.data[0].text or "")

    gone = client.vector_stores.files.delete(f, vector_store_id=store.id)
    assert (gone.object, gone.deleted) == ("vector_store.file.deleted", True)
    assert client.files.retrieve(f).id == f  # the File stays
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(f, vector_store_id=store.id)
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0

    renamed = client.vector_stores.update(
        store.id, name="renamed", expires_after={"anchor": "last_active_at", "days": 3}
    )
    assert renamed.name == "renamed"
    assert renamed.expires_after is not None
    assert renamed.expires_after.days == 3
    assert renamed.expires_at == renamed.last_active_at + 3 * 86400  # type: ignore[operator]
    cleared = client.vector_stores.update(store.id, expires_after=None)
    assert (cleared.expires_after, cleared.expires_at) == (None, None)

    dropped = client.vector_stores.delete(store.id)
    assert (dropped.object, dropped.deleted) == ("vector_store.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.create(vector_store_id="vs_missing", file_id=f)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.create(vector_store_id=store.id, file_id="file-missing")
