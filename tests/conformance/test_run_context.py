"""What the model is sent: response formats, and `auto` truncation within a token budget."""

import json
from typing import Any

import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer

SCHEMA = {
    "name": "answer",
    "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    "strict": True,
}


@pytest.mark.parametrize(
    ("response_format", "sent"),
    [
        ("auto", None),
        ({"type": "json_object"}, {"type": "json_object"}),
        ({"type": "json_schema", "json_schema": SCHEMA},
         {"type": "json_schema", "json_schema": SCHEMA}),
    ],
)  # fmt: skip
def test_response_format_reaches_the_model(
    client: OpenAI, model: ScriptedModelServer, response_format: Any, sent: Any
) -> None:
    marker = f"format {json.dumps(response_format)}"
    model.script(marker, reply='{"x": 1}')
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": marker}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, response_format=response_format
    )
    assert run.status == "completed"
    echoed = run.response_format
    if not isinstance(echoed, str):
        echoed = echoed.model_dump(exclude_none=True, by_alias=True)  # type: ignore[union-attr]
    assert echoed == response_format
    request = [r for r in model.requests if marker in str(r["messages"])][-1]
    assert request.get("response_format") == sent


def test_auto_truncation_keeps_the_newest_messages_that_fit(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """With max_prompt_tokens the oldest messages are dropped, the run still completes."""
    filler = " ".join(f"word{i}" for i in range(150))  # about 300 tokens each
    history = [{"role": "user", "content": f"old {n}: {filler}"} for n in range(6)]
    thread = client.beta.threads.create(messages=[*history, {"role": "user", "content": "newest"}])
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=1000,
        truncation_strategy={"type": "auto"},
    )  # fmt: skip
    assert run.status == "completed"
    sent = [r for r in model.requests if r["messages"][-1]["content"] == "newest"][-1]
    contents = [m["content"] for m in sent["messages"]]
    assert contents[0] == "Be brief."
    assert contents[-1] == "newest"
    kept_old = [c for c in contents if c.startswith("old ")]
    assert 1 <= len(kept_old) < 6  # some history kept, the oldest dropped
    assert kept_old == [f"old {n}: {filler}" for n in range(6 - len(kept_old), 6)]
