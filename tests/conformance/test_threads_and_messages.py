"""Conformance, threads and messages: reference section 7, scenarios 14-20.

Covered: 14 (thread defaults), 15 (initial messages), 16 (content parts: text, image_url,
image_file), 17 (an attachment makes the thread's vector store), 18 (message update and
delete), 19 (message of another thread), 20 (thread update and delete).
"""

import asyncio
import uuid

import asyncpg
import openai
import pytest
from openai import OpenAI

from tests.system import System


def test_s14_thread_defaults(client: OpenAI) -> None:
    """threads.create() → object thread, id thread_…, metadata {}, tool_resources {}."""
    thread = client.beta.threads.create()
    assert thread.object == "thread"
    assert thread.id.startswith("thread_")
    assert thread.metadata == {}
    assert thread.tool_resources is not None
    assert thread.tool_resources.code_interpreter is None
    assert thread.tool_resources.file_search is None


def test_s15_initial_messages_keep_order_and_roles(client: OpenAI) -> None:
    """create(messages=[user a, assistant b]) → listed asc in that order, as written."""
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    )
    listed = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [m.role for m in listed] == ["user", "assistant"]
    for message, text in zip(listed, ["a", "b"], strict=True):
        assert message.content[0].type == "text"
        assert message.content[0].text.value == text
        assert message.content[0].text.annotations == []
        assert message.run_id is None
        assert message.assistant_id is None
        assert message.status == "completed"


def test_s16_content_parts_in_order(client: OpenAI) -> None:
    """Text, image_url and image_file parts come back as blocks of those types, in order."""
    img = client.files.create(file=("y.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 8), purpose="vision")
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread_id=thread.id, role="user",
        content=[{"type": "text", "text": "hi"},
                 {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                 {"type": "image_file", "image_file": {"file_id": img.id}}],
    )  # fmt: skip
    assert [c.type for c in message.content] == ["text", "image_url", "image_file"]
    assert message.content[0].text.value == "hi"  # type: ignore[union-attr]
    assert message.content[1].image_url.url == "https://x/y.png"  # type: ignore[union-attr]
    assert message.content[2].image_file.file_id == img.id  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=[])


def test_s17_attachment_creates_the_threads_vector_store(client: OpenAI) -> None:
    """A file_search attachment puts the file in a new store of the thread (7 days idle)."""
    doc = client.files.create(file=("a.txt", b"attached"), purpose="assistants")
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="see file",
        attachments=[{"file_id": doc.id, "tools": [{"type": "file_search"}]}],
    )  # fmt: skip
    assert message.attachments is not None
    assert message.attachments[0].file_id == doc.id
    assert message.attachments[0].tools[0].type == "file_search"  # type: ignore[index,union-attr]
    resources = client.beta.threads.retrieve(thread.id).tool_resources
    assert resources is not None
    assert resources.file_search is not None
    (store_id,) = resources.file_search.vector_store_ids or []
    store = client.vector_stores.retrieve(store_id)
    assert store.expires_after is not None
    assert (store.expires_after.anchor, store.expires_after.days) == ("last_active_at", 7)
    assert client.vector_stores.files.retrieve(doc.id, vector_store_id=store_id).id == doc.id


async def count_messages_saying(system: System, text: str) -> int:
    conn = await asyncpg.connect(system.infra.database_url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM messages WHERE content->0->'text'->>'value' = $1", text
        ))  # fmt: skip
    finally:
        await conn.close()


def test_initial_messages_with_attachments_or_a_missing_file(
    client: OpenAI, system: System
) -> None:
    """A thread's initial messages are written in one statement: attachments land on the right
    message and a file_search one fills the thread's store; a missing file in a later message
    is named and nothing is created."""
    doc = client.files.create(file=("b.txt", b"attached"), purpose="assistants")
    attach = [{"file_id": doc.id, "tools": [{"type": "file_search"}]}]
    thread = client.beta.threads.create(messages=[
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second", "attachments": attach, "metadata": {"n": "2"}},
    ])  # fmt: skip
    listed = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [(m.content[0].text.value, bool(m.attachments), m.metadata) for m in listed] == [  # type: ignore[union-attr]
        ("first", False, {}),
        ("second", True, {"n": "2"}),
    ]
    resources = client.beta.threads.retrieve(thread.id).tool_resources
    assert resources is not None
    assert resources.file_search is not None
    (store_id,) = resources.file_search.vector_store_ids or []
    assert client.vector_stores.files.retrieve(doc.id, vector_store_id=store_id).id == doc.id
    missing = [{"file_id": "file-nope", "tools": [{"type": "file_search"}]}]
    marker = f"not fine {uuid.uuid4().hex}"
    with pytest.raises(openai.NotFoundError, match="No file found with id 'file-nope'"):
        client.beta.threads.create(messages=[
            {"role": "user", "content": "fine", "attachments": attach},
            {"role": "user", "content": marker, "attachments": missing},
        ])  # fmt: skip
    written = asyncio.run(count_messages_saying(system, marker))
    assert written == 0


def test_s18_message_update_and_delete(client: OpenAI) -> None:
    """update changes only metadata; delete → thread.message.deleted, then 404."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "keep me"}])
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    updated = client.beta.threads.messages.update(
        message.id, thread_id=thread.id, metadata={"k": "v"}
    )
    assert updated.metadata == {"k": "v"}
    assert updated.content == message.content
    assert updated.created_at == message.created_at
    gone = client.beta.threads.messages.delete(message.id, thread_id=thread.id)
    assert (gone.id, gone.object, gone.deleted) == (message.id, "thread.message.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)


def test_s19_message_of_another_thread_is_404(client: OpenAI) -> None:
    """messages.retrieve(m, thread_id=other) → NotFoundError."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "mine"}])
    other = client.beta.threads.create()
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message.id, thread_id=other.id)


def test_s20_thread_update_and_delete(client: OpenAI) -> None:
    """update replaces metadata; delete → thread.deleted; then thread and messages 404."""
    thread = client.beta.threads.create(
        metadata={"a": "1"}, messages=[{"role": "user", "content": "x"}]
    )
    assert client.beta.threads.update(thread.id, metadata={"x": "1"}).metadata == {"x": "1"}
    gone = client.beta.threads.delete(thread.id)
    assert (gone.id, gone.object, gone.deleted) == (thread.id, "thread.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list(thread_id=thread.id)
