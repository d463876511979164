"""Conformance, transport and assistants: reference section 7, scenarios 1-13.

Covered: 1 (beta header), 2 (404, no retry), 3 (limit bounds), 4 (metadata limits), 5 (error
shape and request id), 6 (assistant defaults), 8 (128 tools), 9 (update semantics), 10 (order
within one second), 11 (paging), 12 (before/after), 13 (delete), 7 (file_search with a
`vector_stores` helper).
"""

import openai
import pytest
from openai import OpenAI

from tests.system import API_KEY


def counting(client: OpenAI) -> tuple[OpenAI, list[openai.DefaultHttpxClient]]:
    """A client whose requests are recorded (method, path, headers)."""
    seen: list[object] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [seen.append]})
    return client.with_options(http_client=http, max_retries=0), seen  # type: ignore[return-value]


def test_s01_beta_header_is_sent_and_required(client: OpenAI) -> None:
    """Assistants calls carry OpenAI-Beta; without it: 400 invalid_beta."""
    recording, seen = counting(client)
    recording.beta.assistants.list(limit=1)
    request = seen[-1]
    assert request.headers["OpenAI-Beta"] == "assistants=v2"  # type: ignore[attr-defined]
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        recording.beta.assistants.list(extra_headers={"OpenAI-Beta": openai.Omit()})  # type: ignore[dict-item]
    assert caught.value.code == "invalid_beta"
    assert caught.value.type == "invalid_request_error"


def test_s02_unknown_assistant_is_404_without_retry(client: OpenAI) -> None:
    """retrieve("asst_missing") → NotFoundError, one request."""
    recording, seen = counting(client)
    with pytest.raises(openai.NotFoundError) as caught:
        recording.beta.assistants.retrieve("asst_missing")
    assert caught.value.status_code == 404
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "invalid_request_error"
    assert "asst_missing" in caught.value.message
    assert len(seen) == 1


@pytest.mark.parametrize("limit", [101, 0])
def test_s03_limit_out_of_range(client: OpenAI, limit: int) -> None:
    """list(limit=101) and limit=0 → BadRequestError with param "limit"."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.list(limit=limit)
    assert caught.value.param == "limit"


@pytest.mark.parametrize(
    "metadata",
    [{str(i): "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}],
    ids=["17-keys", "65-char-key", "513-char-value"],
)
def test_s04_metadata_over_the_limits(client: OpenAI, metadata: dict[str, str]) -> None:
    """17 keys, a 65-char key or a 513-char value → BadRequestError."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model="m", metadata=metadata)
    assert caught.value.param is not None
    assert caught.value.param.startswith("metadata")


def test_s04_metadata_at_the_limits_round_trips(client: OpenAI) -> None:
    """16 keys of 64 chars with 512-char values → accepted and returned as sent."""
    metadata = {f"{i:02d}".ljust(64, "k"): "v" * 512 for i in range(16)}
    created = client.beta.assistants.create(model="m", metadata=metadata)
    assert created.metadata == metadata
    assert client.beta.assistants.retrieve(created.id).metadata == metadata


def test_s05_every_error_has_the_shape_and_a_request_id(client: OpenAI) -> None:
    """{"error": {message, type, param, code}} and x-request-id → e.request_id."""
    errors: list[openai.APIStatusError] = []
    for call in (
        lambda: client.beta.assistants.retrieve("asst_nope"),
        lambda: client.beta.assistants.list(limit=500),
        lambda: client.beta.threads.runs.retrieve("run_nope", thread_id="thread_nope"),
    ):
        with pytest.raises(openai.APIStatusError) as caught:
            call()
        errors.append(caught.value)
    for error in errors:
        assert isinstance(error.body, dict)
        assert set(error.body) == {"message", "type", "param", "code"}
        assert error.request_id is not None
        assert error.request_id.startswith("req_")


def test_s06_assistant_defaults(client: OpenAI) -> None:
    """create with code_interpreter → defaults filled, code_interpreter.file_ids == []."""
    created = client.beta.assistants.create(
        model="gpt-4o", name="A", tools=[{"type": "code_interpreter"}]
    )
    assert created.object == "assistant"
    assert created.id.startswith("asst_")
    assert [t.type for t in created.tools] == ["code_interpreter"]
    assert created.metadata == {}
    assert created.temperature == 1.0
    assert created.top_p == 1.0
    assert created.response_format == "auto"
    assert created.tool_resources is not None
    assert created.tool_resources.code_interpreter is not None
    assert created.tool_resources.code_interpreter.file_ids == []
    searching = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "file_search"}])
    options = searching.tools[0].file_search  # type: ignore[union-attr]
    assert options is not None
    assert options.ranking_options is not None
    assert options.ranking_options.ranker == "default_2024_08_21"
    assert options.ranking_options.score_threshold == 0.0


def test_s07_file_search_with_a_vector_stores_helper(client: OpenAI) -> None:
    """The helper creates exactly one store holding the file, named by id on the assistant."""
    doc = client.files.create(file=("kb.txt", b"knowledge"), purpose="assistants")
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [doc.id]}]}},
    )
    assert assistant.tool_resources is not None
    assert assistant.tool_resources.file_search is not None
    (store_id,) = assistant.tool_resources.file_search.vector_store_ids or []
    assert store_id.startswith("vs_")
    assert client.vector_stores.files.retrieve(doc.id, vector_store_id=store_id).id == doc.id
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.create(
            model="gpt-4o",
            tool_resources={"file_search": {"vector_store_ids": ["vs_missing"]}},
        )


def test_s08_at_most_128_tools(client: OpenAI) -> None:
    """129 function tools → BadRequestError; 128 → created."""
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]
    with pytest.raises(openai.BadRequestError):
        client.beta.assistants.create(model="m", tools=tools)  # type: ignore[arg-type]
    created = client.beta.assistants.create(model="m", tools=tools[:128])  # type: ignore[arg-type]
    assert len(created.tools) == 128


def test_s09_update_changes_only_what_is_sent(client: OpenAI) -> None:
    """update(name="B") keeps the rest; name=None clears; tools=[] empties."""
    created = client.beta.assistants.create(
        model="m", name="A", instructions="I", metadata={"k": "v"},
        tools=[{"type": "function", "function": {"name": "f"}}],
    )  # fmt: skip
    renamed = client.beta.assistants.update(created.id, name="B")
    assert renamed.name == "B"
    assert (renamed.instructions, renamed.metadata) == ("I", {"k": "v"})
    assert renamed.tools == created.tools
    assert client.beta.assistants.update(created.id, name=None).name is None
    assert client.beta.assistants.update(created.id, tools=[]).tools == []


def test_s10_to_s12_listing_order_paging_and_cursors(client: OpenAI) -> None:
    """Three assistants in one second: desc, asc, limit/after, before, auto-paging."""
    marker = {"batch": openai.__version__ + str(id(client))}
    # Ascending order starts at the oldest assistant of the whole suite: start it after one
    # made just before ours, so the test holds however many earlier tests created.
    a0 = client.beta.assistants.create(model="m")
    a1, a2, a3 = (client.beta.assistants.create(model="m", metadata=marker) for _ in range(3))
    ours = {a1.id, a2.id, a3.id}

    def mine(page: object) -> list[str]:
        return [a.id for a in page.data if a.id in ours]  # type: ignore[attr-defined]

    assert mine(client.beta.assistants.list(limit=100)) == [a3.id, a2.id, a1.id]
    ascending = client.beta.assistants.list(limit=100, order="asc", after=a0.id)
    assert [a.id for a in ascending.data][:3] == [a1.id, a2.id, a3.id]
    first = client.beta.assistants.list(limit=2)
    assert [a.id for a in first.data] == [a3.id, a2.id]
    assert first.has_more is True
    assert first.first_id == a3.id
    assert first.last_id == a2.id
    rest = client.beta.assistants.list(limit=2, after=first.last_id)
    assert rest.data[0].id == a1.id
    assert mine(client.beta.assistants.list(order="asc", before=a3.id, limit=100)) == [a1.id, a2.id]
    assert mine(client.beta.assistants.list(order="desc", after=a3.id, limit=100)) == [a2.id, a1.id]
    every = [a.id for a in client.beta.assistants.list(limit=1)]
    assert len(every) == len(set(every))
    assert ours <= set(every)


def test_s13_delete(client: OpenAI) -> None:
    """delete → AssistantDeleted; then 404 and gone from list."""
    created = client.beta.assistants.create(model="m")
    gone = client.beta.assistants.delete(created.id)
    assert (gone.id, gone.object, gone.deleted) == (created.id, "assistant.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(created.id)
    assert created.id not in [a.id for a in client.beta.assistants.list(limit=100)]
