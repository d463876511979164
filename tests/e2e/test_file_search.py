"""User story: the seed's file_search walkthrough, a paper PDF searched by an assistant, cited."""

import json

import openai
import pytest
from openai import OpenAI

from tests.documents import pdf
from tests.fakes.model_server import ScriptedModelServer
from tests.system import System

PAPER = [
    [
        "Attention Is All You Need",
        "The Transformer relies entirely on self-attention to compute representations",
        "of its input and output without using recurrence or convolution.",
    ],
    [
        "Scaled dot-product attention divides the dot products of queries and keys",
        "by the square root of the key dimension, then applies a softmax function.",
        "Multi-head attention projects queries, keys and values h times in parallel.",
    ],
]
QUESTION = "What are some cool math concepts behind this ML paper pdf?"
ANSWER = "It scales dot products by the square root of the key dimension 【0:0†paper.pdf】."


def _script_search_then_answer(model: ScriptedModelServer, queries: list[str]) -> None:
    search = {"name": "file_search", "arguments": json.dumps({"queries": queries})}
    model.script(QUESTION, tool_calls=[search])
    model.script("Results of file_search", reply=ANSWER)


def test_seed_walkthrough_cites_the_paper(client: OpenAI, model: ScriptedModelServer) -> None:
    _script_search_then_answer(model, ["math concepts scaled dot-product attention"])
    paper = client.files.create(file=("paper.pdf", pdf(PAPER)), purpose="assistants")
    store = client.vector_stores.create(name="ML papers")
    attached = client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=paper.id
    )
    assert attached.status == "completed"
    assistant = client.beta.assistants.create(
        name="Research Assistant",
        instructions="You answer questions about papers using file_search.",
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    assert assistant.tool_resources is not None
    assert assistant.tool_resources.file_search is not None
    assert assistant.tool_resources.file_search.vector_store_ids == [store.id]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]
    tool_step = steps.data[0]
    assert tool_step.step_details.type == "tool_calls"
    call = tool_step.step_details.tool_calls[0]
    assert call.type == "file_search"
    assert call.file_search.ranking_options is not None
    assert call.file_search.ranking_options.ranker == "default_2024_08_21"
    results = call.file_search.results or []
    assert results[0].file_id == paper.id
    assert results[0].file_name == "paper.pdf"
    assert 0 <= results[0].score <= 1
    assert results[0].content is None  # only with include[]

    detailed = client.beta.threads.runs.steps.retrieve(
        tool_step.id,
        thread_id=thread.id,
        run_id=run.id,
        include=["step_details.tool_calls[*].file_search.results[*].content"],
    )
    content = detailed.step_details.tool_calls[0].file_search.results[0].content  # type: ignore[union-attr]
    assert content is not None
    assert content[0].type == "text"
    assert "square root of the key dimension" in (content[0].text or "")

    # The model was offered the tool, and read the paper's text behind a marker.
    first = model.wait_for_request(QUESTION)
    assert "file_search" in [t["function"]["name"] for t in first["tools"]]
    second = model.wait_for_request("Results of file_search")
    assert "【0:0†paper.pdf】" in second["messages"][-1]["content"]

    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.content[0].type == "text"
    text = reply.content[0].text
    assert text.value == ANSWER
    (annotation,) = text.annotations
    assert annotation.type == "file_citation"
    assert annotation.file_citation.file_id == paper.id
    assert text.value[annotation.start_index : annotation.end_index] == annotation.text
    assert annotation.text == "【0:0†paper.pdf】"
    assert client.vector_stores.retrieve(store.id).last_active_at is not None


def test_streamed_file_search_run(client: OpenAI, model: ScriptedModelServer) -> None:
    """Scenario 49: a file_search delta with `file_search: {}`, results, an annotation delta."""
    _script_search_then_answer(model, ["square root"])
    paper = client.files.create(file=("paper.pdf", pdf(PAPER)), purpose="assistants")
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [paper.id]}]}},
    )
    store_ids = assistant.tool_resources.file_search.vector_store_ids  # type: ignore[union-attr]
    assert len(store_ids) == 1
    store = client.vector_stores.retrieve(store_ids[0])
    assert store.file_counts.total == 1
    assert store.expires_after is None  # only thread stores get the 7-day default
    client.vector_stores.files.poll(paper.id, vector_store_id=store.id)

    with client.beta.threads.create_and_run_stream(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": QUESTION}]}
    ) as stream:
        events = list(stream)
        final = stream.get_final_messages()
    step_deltas = [e for e in events if e.event == "thread.run.step.delta"]
    first_call = step_deltas[0].data.delta.step_details.tool_calls[0]  # type: ignore[union-attr]
    assert first_call.type == "file_search"
    completed_tool_step = next(
        e.data for e in events
        if e.event == "thread.run.step.completed" and e.data.type == "tool_calls"
    )  # fmt: skip
    assert completed_tool_step.step_details.tool_calls[0].file_search.results  # type: ignore[union-attr]
    annotated = [
        e for e in events
        if e.event == "thread.message.delta" and e.data.delta.content
        and e.data.delta.content[0].text.annotations  # type: ignore[union-attr]
    ]  # fmt: skip
    assert annotated
    (message,) = final
    annotation = message.content[0].text.annotations[0]  # type: ignore[union-attr]
    assert annotation.file_citation.file_id == paper.id  # type: ignore[union-attr]
    value = message.content[0].text.value  # type: ignore[union-attr]
    assert value[annotation.start_index : annotation.end_index] == annotation.text


def test_attachment_goes_to_the_threads_own_store(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """Scenario 17: an attachment with file_search makes a 7-day store on the thread."""
    _script_search_then_answer(model, ["transformer"])
    paper = client.files.create(file=("paper.pdf", pdf(PAPER)), purpose="assistants")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "file_search"}])
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content=QUESTION,
        attachments=[{"file_id": paper.id, "tools": [{"type": "file_search"}]}],
    )
    assert message.attachments is not None
    assert message.attachments[0].file_id == paper.id
    resources = client.beta.threads.retrieve(thread.id).tool_resources
    assert resources is not None
    assert resources.file_search is not None
    (store_id,) = resources.file_search.vector_store_ids or []
    store = client.vector_stores.retrieve(store_id)
    assert store.expires_after is not None
    assert store.expires_after.model_dump() == {"anchor": "last_active_at", "days": 7}
    assert [f.id for f in client.vector_stores.files.list(store_id).data] == [paper.id]
    # The run waits for the thread's store to finish indexing, then finds the paper.
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.content[0].text.annotations[0].file_citation.file_id == paper.id  # type: ignore[union-attr]


def test_run_on_an_expired_store_fails_clearly(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    paper = client.files.create(file=("paper.pdf", pdf(PAPER)), purpose="assistants")
    store = client.vector_stores.create(
        file_ids=[paper.id], expires_after={"anchor": "last_active_at", "days": 1}
    )
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    # Two days pass without activity (a one-day policy).
    system.sql(
        "UPDATE vector_stores SET last_active_at = last_active_at - 2 * 86400 WHERE id = $1",
        store.id,
    )
    assert client.vector_stores.retrieve(store.id).status == "expired"
    with pytest.raises(openai.BadRequestError) as refused:
        client.vector_stores.search(store.id, query="attention")
    assert "expired" in refused.value.message
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": QUESTION}]}
    )
    assert run.status == "failed"
    assert run.last_error is not None
    assert store.id in run.last_error.message
    assert "expired" in run.last_error.message
    assert model.requests == []  # the model was never asked
