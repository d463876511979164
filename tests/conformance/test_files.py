"""Scenarios 52-55: the Files API through the strict SDK, and its size limits over raw HTTP."""

import httpx
import openai
import pytest
from openai import OpenAI

from tests.system import HEADERS, System, wait_until


def test_upload_retrieve_and_list_by_purpose(client: OpenAI) -> None:
    created = client.files.create(file=("a.txt", b"hello"), purpose="assistants")
    assert created.object == "file"
    assert created.id.startswith("file-")
    assert (created.bytes, created.filename, created.purpose) == (5, "a.txt", "assistants")
    assert created.status == "processed"
    assert created.expires_at is None
    assert client.files.retrieve(created.id) == created

    listed = client.files.list()
    assert listed.data[0].id == created.id  # newest first
    assert created.id not in [f.id for f in client.files.list(purpose="vision")]
    assert created.id in [f.id for f in client.files.list(purpose="assistants")]
    oldest_first = client.files.list(order="asc", limit=10_000).data
    assert oldest_first[-1].id == created.id


def test_every_upload_purpose_is_accepted(client: OpenAI) -> None:
    for purpose in ("assistants", "batch", "fine-tune", "vision", "user_data"):
        made = client.files.create(file=(f"{purpose}.jsonl", b"{}\n"), purpose=purpose)
        assert made.purpose == purpose
    batch = client.files.list(purpose="batch").data[0]
    assert batch.expires_at == batch.created_at + 30 * 86400  # batch files expire in 30 days


def test_expires_after_sets_expires_at(client: OpenAI) -> None:
    made = client.files.create(
        file=("e.txt", b"soon gone"),
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert made.expires_at == made.created_at + 3600
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(
            file=("e.txt", b"x"),
            purpose="assistants",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert caught.value.body["param"] == "expires_after.seconds"  # type: ignore[index]


def test_content_returns_the_exact_bytes(client: OpenAI) -> None:
    payload = bytes(range(256)) * 5000  # 1.28 MB: more than one stored part
    made = client.files.create(file=("blob.bin", payload), purpose="vision")
    assert made.bytes == len(payload)
    assert client.files.content(made.id).read() == payload
    # Self-hosted, every purpose may be downloaded (the hosted API refused `assistants`).
    text = client.files.create(file=("a.txt", b"assistants too"), purpose="assistants")
    assert client.files.content(text.id).read() == b"assistants too"


def test_empty_and_oversized_uploads_are_refused(client: OpenAI, system: System) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        client.files.create(file=("empty.txt", b""), purpose="assistants")
    assert empty.value.body["code"] == "empty_file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("a.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]

    limit = int(system.env["THREADBUS_MAX_FILE_BYTES"])
    too_big = b"x" * (limit + 1)
    with pytest.raises(openai.APIStatusError) as big:
        client.files.create(file=("big.txt", too_big), purpose="assistants")
    assert big.value.status_code == 413
    assert big.value.body["code"] == "file_too_large"  # type: ignore[index]
    # Without a Content-Length the limit is enforced as the bytes arrive.
    boundary = "threadbus-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()

    def chunked() -> object:
        yield head
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    answer = httpx.post(
        f"{system.api_url}/files",
        content=chunked(),  # type: ignore[arg-type]
        headers={**HEADERS, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "file_too_large"


def test_delete_removes_the_file_from_every_vector_store(client: OpenAI) -> None:
    doc = client.files.create(file=("gone.txt", b"A file about deletion."), purpose="assistants")
    keep = client.files.create(file=("kept.txt", b"A file that stays."), purpose="assistants")
    stores = [
        client.vector_stores.create(name=f"s{n}", file_ids=[doc.id, keep.id]) for n in range(2)
    ]
    for store in stores:
        wait_until(
            lambda s=store: client.vector_stores.retrieve(s.id).file_counts.completed == 2, 120
        )

    deleted = client.files.delete(doc.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (doc.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(doc.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(doc.id)
    for store in stores:
        after = client.vector_stores.retrieve(store.id)
        assert after.file_counts.total == 1
        assert [f.id for f in client.vector_stores.files.list(store.id)] == [keep.id]
        hits = client.vector_stores.search(store.id, query="deletion")
        assert doc.id not in [h.file_id for h in hits.data]


def test_form_fields_may_follow_the_file_part(system: System, client: OpenAI) -> None:
    """The file is stored as it streams in; `purpose` may come after it."""
    boundary = "tb-order"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.txt"\r\n'
        "Content-Type: text/plain\r\n\r\nfile first\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    answer = httpx.post(
        f"{system.api_url}/files",
        content=body,
        headers={**HEADERS, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert client.files.content(answer.json()["id"]).read() == b"file first"
    not_multipart = httpx.post(f"{system.api_url}/files", json={"purpose": "assistants"},
                               headers=HEADERS)  # fmt: skip
    assert not_multipart.status_code == 400
    assert not_multipart.json()["error"]["param"] == "file"
