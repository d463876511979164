"""Assistants, threads and messages: shapes, updates, deletes and paging, through the SDK."""

import openai
import pytest
from openai import OpenAI


def test_assistant_lifecycle(client: OpenAI) -> None:
    created = client.beta.assistants.create(
        model="gpt-4o",
        name="Math Tutor",
        tools=[
            {
                "type": "function",
                "function": {"name": "display_quiz", "parameters": {"type": "object"}},
            }
        ],
        metadata={"team": "math"},
        temperature=0.2,
    )
    assert created.object == "assistant"
    assert created.metadata == {"team": "math"}
    assert created.temperature == 0.2
    assert created.response_format == "auto"
    assert created.tools[0].type == "function"

    updated = client.beta.assistants.update(created.id, name="Algebra Tutor", description=None)
    assert (updated.name, updated.model, updated.temperature) == ("Algebra Tutor", "gpt-4o", 0.2)
    assert updated.metadata == {"team": "math"}

    deleted = client.beta.assistants.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "assistant.deleted")


def test_list_pages_are_stable_within_one_second(client: OpenAI) -> None:
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": str(i)} for i in range(7)], metadata={"k": "v"}
    )
    assert thread.metadata == {"k": "v"}
    every = client.beta.threads.messages.list(thread_id=thread.id, order="asc", limit=3)
    texts = [m.content[0].text.value for m in every]  # type: ignore[union-attr]
    assert texts == [str(i) for i in range(7)]  # auto-paging with after= keeps insertion order

    page = client.beta.threads.messages.list(thread_id=thread.id, limit=3)
    assert [m.content[0].text.value for m in page.data] == ["6", "5", "4"]  # type: ignore[union-attr]
    assert page.has_more
    assert page.first_id == page.data[0].id
    assert page.last_id == page.data[-1].id
    older = client.beta.threads.messages.list(thread_id=thread.id, limit=3, after=page.data[-1].id)
    assert [m.content[0].text.value for m in older.data] == ["3", "2", "1"]  # type: ignore[union-attr]
    newer = client.beta.threads.messages.list(thread_id=thread.id, limit=2, before=older.data[0].id)
    assert [m.content[0].text.value for m in newer.data] == ["5", "4"]  # type: ignore[union-attr]

    message = client.beta.threads.messages.retrieve(page.data[0].id, thread_id=thread.id)
    assert message.status == "completed"
    assert message.assistant_id is None
    assert message.run_id is None
    changed = client.beta.threads.messages.update(
        message.id, thread_id=thread.id, metadata={"a": "b"}
    )
    assert changed.metadata == {"a": "b"}


def test_thread_update_and_delete(client: OpenAI) -> None:
    thread = client.beta.threads.create()
    assert thread.tool_resources is not None
    assert thread.metadata == {}
    assert client.beta.threads.update(thread.id, metadata={"x": "1"}).metadata == {"x": "1"}
    assert client.beta.threads.delete(thread.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list(thread_id=thread.id)
