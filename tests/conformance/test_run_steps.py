"""Conformance, run steps: reference section 7, scenarios 40 and 41."""

import json

from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer


def test_s40_a_plain_run_has_one_message_creation_step(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """steps.list → one completed message_creation step naming the reply; retrieve equals it."""
    model.script("s40 question", reply="s40 answer")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s40 question"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    listed = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert len(listed) == 1
    step = listed[0]
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert step.type == "message_creation"
    assert step.status == "completed"
    assert step.step_details.message_creation.message_id == reply.id  # type: ignore[union-attr]
    assert step.usage is not None
    assert step.usage.total_tokens > 0
    again = client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread.id, run_id=run.id)
    assert again == step


def test_s41_steps_list_newest_first_unless_asked(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """A tool step then a message step: desc lists the message step first, asc the tool step."""
    model.script("s41 question", tool_calls=[{"name": "s41_tool", "arguments": json.dumps({})}])
    model.script("s41 output", reply="s41 answer")
    tool = {"type": "function", "function": {"name": "s41_tool"}}
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[tool])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s41 question"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.required_action is not None
    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id,
        tool_outputs=[{"tool_call_id": call_id, "output": "s41 output"}],
    )  # fmt: skip
    assert run.status == "completed"
    desc = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    asc = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert [s.type for s in desc] == ["message_creation", "tool_calls"]
    assert [s.id for s in asc] == [s.id for s in reversed(desc)]
    assert all(s.usage is not None for s in asc)
