"""Invalid input is a 400 naming the parameter, and reaches neither the database nor the model."""

from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer

RUN_CASES: list[tuple[dict[str, Any], str]] = [
    ({"temperature": 3}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"max_prompt_tokens": 100}, "max_prompt_tokens"),
    ({"max_completion_tokens": 255}, "max_completion_tokens"),
    ({"truncation_strategy": {"type": "last_messages", "last_messages": 0}},
     "truncation_strategy.last_messages"),
    ({"truncation_strategy": {"type": "middle_out"}}, "truncation_strategy.type"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(21)]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]},
     "tools[0].function.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!"}}},
     "response_format.json_schema.name"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k"),
    ({"additional_messages": [{"role": "system", "content": "x"}]},
     "additional_messages[0].role"),
    ({"parallel_tool_calls": "sometimes"}, "parallel_tool_calls"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "param"), RUN_CASES, ids=[p for _, p in RUN_CASES])
def test_invalid_run_options_are_400_and_create_nothing(
    client: OpenAI, model: ScriptedModelServer, options: dict[str, Any], param: str
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id, extra_body=options
        )
    assert caught.value.param is not None
    assert caught.value.param == param
    assert caught.value.message
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert len(client.beta.threads.messages.list(thread_id=thread.id).data) == 1
    assert model.requests == []


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "m", "name": "n" * 257}, "name", "Invalid value for 'name'"),
        ({"model": "m", "description": "d" * 513}, "description", "Invalid value"),
        ({"model": 5}, "model", "Invalid value for 'model'"),
        ({"model": "m", "tools": [{"type": "browser"}]}, "tools[0]", "Invalid value"),
        ({"model": "m", "surprise": True}, "surprise", "Unrecognized request argument"),
        ({"name": "no model"}, "model", "Missing required parameter: 'model'"),
    ],
)
def test_invalid_assistants_are_400(
    client: OpenAI, body: dict[str, Any], param: str, fragment: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/assistants", body=body, cast_to=object,
                    options={"headers": {"OpenAI-Beta": "assistants=v2"}})  # fmt: skip
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_unknown_ids_are_404_and_create_nothing(client: OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError, match="No assistant found with id 'asst_ghost'"):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_ghost")
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assistant = client.beta.assistants.create(model="m")
    with pytest.raises(openai.NotFoundError, match="No thread found with id 'thread_ghost'"):
        client.beta.threads.runs.create(thread_id="thread_ghost", assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.messages.list(thread_id=thread.id, order="sideways")  # type: ignore[arg-type]
    assert caught.value.param == "order"
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.steps.list(
            run_id="run_x",
            thread_id=thread.id,
            include=["nonsense"],  # type: ignore[list-item]
        )
    assert caught.value.param == "include"


def test_nul_characters_in_text_are_a_400_naming_the_field(client: OpenAI) -> None:
    """Postgres cannot store U+0000: every request body refuses it before it gets there."""
    store = client.vector_stores.create(name="nul")
    attempts = [
        (lambda: client.beta.assistants.create(model="m", description="a\x00b"), "description"),
        (lambda: client.beta.assistants.create(model="m", metadata={"k": "v\x00"}), "metadata.k"),
        (lambda: client.beta.threads.create(messages=[{"role": "user", "content": "\x00"}]),
         "messages[0].content"),
        (lambda: client.vector_stores.search(store.id, query="a\x00b"), "query"),
        (lambda: client.vector_stores.create(name="x\x00"), "name"),
    ]  # fmt: skip
    for call, field in attempts:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert f"{field} contains the NUL character" in refused.value.message
