"""User story: function calling as in the Assistants API, client-side and server-side."""

import json
from typing import Any

import asyncpg
import openai
import pytest
from openai import OpenAI

from services.tool_executor.registry import REPLAY_WINDOW_SECONDS, verify
from tests.fakes.model_server import ScriptedModelServer
from tests.fakes.webhook import SECRET, SHIP_SECRET, WebhookServer
from tests.system import System, wait_until

QUIZ_PROMPT = (
    "Make a quiz with 2 questions: One open ended, one multiple choice. "
    "Then, give me feedback for the responses."
)
QUIZ = {
    "title": "Quiz",
    "questions": [
        {"question_text": "What is your favourite colour?", "question_type": "FREE_RESPONSE"},
        {"question_text": "What is 2 + 2?", "question_type": "MULTIPLE_CHOICE",
         "choices": ["4", "5", "22"]},
    ],
}  # fmt: skip
DISPLAY_QUIZ = {
    "type": "function",
    "function": {
        "name": "display_quiz",
        "description": "Displays a quiz to the student, and returns the student's response.",
        "parameters": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "questions": {"type": "array"}},
            "required": ["title", "questions"],
        },
    },
}


def function_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def call(name: str, **arguments: Any) -> dict[str, str]:
    return {"name": name, "arguments": json.dumps(arguments)}


async def wait_for_handlers(system: System, *names: str) -> None:
    conn = await asyncpg.connect(system.infra.database_url)
    try:
        for _ in range(300):
            found = await conn.fetchval(
                "SELECT count(*) FROM function_handlers WHERE name = ANY($1::text[])", list(names)
            )
            if found == len(names):
                return
            await __import__("asyncio").sleep(0.1)
    finally:
        await conn.close()
    raise TimeoutError(f"the tool-executor did not advertise {names}")


def test_display_quiz_round_trip(client: OpenAI, model: ScriptedModelServer) -> None:
    model.script(QUIZ_PROMPT, tool_calls=[call("display_quiz", **QUIZ)])
    model.script("I don't know.", reply="Good effort! 2 + 2 is 4; your colour answer is fine.")
    assistant = client.beta.assistants.create(
        name="Math Tutor", instructions="You are a personal math tutor.", model="gpt-4o",
        tools=[DISPLAY_QUIZ],  # type: ignore[list-item]
    )  # fmt: skip
    thread = client.beta.threads.create(messages=[{"role": "user", "content": QUIZ_PROMPT}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    assert run.required_action.type == "submit_tool_outputs"
    assert run.expires_at is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert len(calls) == 1
    assert calls[0].id.startswith("call_")
    assert calls[0].type == "function"
    assert calls[0].function.name == "display_quiz"
    assert json.loads(calls[0].function.arguments) == QUIZ

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [s.type for s in steps] == ["tool_calls"]
    assert steps[0].status == "in_progress"
    assert steps[0].usage is None
    assert steps[0].step_details.type == "tool_calls"
    recorded = steps[0].step_details.tool_calls[0]
    assert recorded.type == "function"
    assert recorded.function.output is None

    responses = ["I don't know.", "a"]
    run = client.beta.threads.runs.submit_tool_outputs(
        thread_id=thread.id, run_id=run.id,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": json.dumps(responses)}],
    )  # fmt: skip
    assert run.status == "queued"
    assert run.required_action is None
    run = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
    assert run.status == "completed"
    assert run.usage is not None
    assert run.usage.total_tokens > 0

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc")
    assert [(s.type, s.status) for s in steps.data] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    done = steps.data[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert done.function.output == json.dumps(responses)  # type: ignore[union-attr]
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.content[0].text.value.startswith("Good effort!")  # type: ignore[union-attr]

    # The model saw its call and the student's answers as a tool message.
    second = [r for r in model.requests if any(m["role"] == "tool" for m in r["messages"])][-1]
    assert second["tools"][0]["function"]["name"] == "display_quiz"
    assistant_turn, tool_turn = second["messages"][-2:]
    assert assistant_turn["tool_calls"][0]["id"] == calls[0].id
    assert tool_turn == {"role": "tool", "tool_call_id": calls[0].id,
                         "content": json.dumps(responses)}  # fmt: skip


def test_parallel_calls_need_every_output_in_one_submission(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    model.script(
        "weather in two cities",
        tool_calls=[call("get_weather", city="Paris"), call("get_weather", city="Rome")],
    )
    model.script("sunny", reply="Both are sunny.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("get_weather")])  # type: ignore[list-item]
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "weather in two cities?"}]
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert len({c.id for c in calls}) == 2

    with pytest.raises(openai.BadRequestError, match="Expected tool outputs for call_ids"):
        client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id,
            tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny"}],
        )  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="call_bogus"):
        client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id,
            tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny"},
                          {"tool_call_id": "call_bogus", "output": "x"}],
        )  # fmt: skip
    still = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert still.status == "requires_action"
    assert still.required_action is not None
    assert len(still.required_action.submit_tool_outputs.tool_calls) == 2

    outputs = [{"tool_call_id": c.id, "output": f"sunny in {i}"} for i, c in enumerate(calls)]
    client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, poll_interval_ms=50, tool_outputs=outputs
    )
    final = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert final.status == "completed"
    step = client.beta.threads.runs.steps.list(
        run_id=run.id, thread_id=thread.id, order="asc"
    ).data[0]
    assert [c.function.output for c in step.step_details.tool_calls] == ["sunny in 0", "sunny in 1"]  # type: ignore[union-attr]

    with pytest.raises(openai.BadRequestError, match='Runs in status "completed" do not accept'):
        client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id, tool_outputs=[]
        )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"parallel_tool_calls": False}, {"parallel_tool_calls": False, "tool_choice": "auto"}),
        ({"tool_choice": "required"}, {"tool_choice": "required"}),
        ({"tool_choice": "none"}, {"tool_choice": "none"}),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
         {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ],
)  # fmt: skip
def test_tool_choice_and_parallelism_reach_the_model(
    client: OpenAI, model: ScriptedModelServer, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    marker = f"choice {json.dumps(options)}"
    model.script(
        marker, tool_calls=[call("get_weather", city="Oslo"), call("get_weather", city="Bergen")]
    )
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("get_weather")])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": marker}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50, **options
    )
    sent = [r for r in model.requests if marker in str(r["messages"])][-1]
    for key, value in expected.items():
        assert sent[key] == value
    assert run.required_action is not None
    pending = run.required_action.submit_tool_outputs.tool_calls
    assert len(pending) == (1 if options.get("parallel_tool_calls") is False else 2)
    client.beta.threads.runs.submit_tool_outputs(
        thread_id=thread.id, run_id=run.id,
        tool_outputs=[{"tool_call_id": c.id, "output": "cold"} for c in pending],
    )  # fmt: skip
    assert client.beta.threads.runs.poll(run.id, thread_id=thread.id).status == "completed"


async def test_server_side_handlers_answer_without_requires_action(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    names = ["lookup_weather", "add_numbers", "explode", "dawdle", "garbage"]
    await wait_for_handlers(system, *names)
    model.script("server tools", tool_calls=[
        call("lookup_weather", city="Paris"), call("add_numbers", a=2, b=3), call("explode"),
        call("dawdle"), call("garbage"),
    ])  # fmt: skip
    model.script("sunny", reply="All done.")
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[function_tool(n) for n in names]
    )  # type: ignore[misc]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "server tools"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    seen = {run.status}
    done = wait_until(lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id))
                      and (seen.add(r.status) or r.status in ("completed", "failed")) and r,
                      timeout=30)  # fmt: skip
    assert done.status == "completed"
    assert "requires_action" not in seen
    step = client.beta.threads.runs.steps.list(
        run_id=run.id, thread_id=thread.id, order="asc"
    ).data[0]
    outputs = {c.function.name: c.function.output for c in step.step_details.tool_calls}  # type: ignore[union-attr]
    assert outputs["lookup_weather"] == "18C and sunny in Paris"
    assert json.loads(outputs["add_numbers"])["sum"] == 5  # via the entry point
    assert outputs["explode"].startswith("Error:")
    assert "the flux capacitor is empty" in outputs["explode"]
    assert outputs["dawdle"] == "Error: the function 'dawdle' did not answer within 0.5 s."
    assert outputs["garbage"].startswith("Error:")
    assert "not text or JSON" in outputs["garbage"]
    tool_ids = {c.id for c in step.step_details.tool_calls}  # type: ignore[union-attr]
    assert json.loads(outputs["add_numbers"])["tool_call_id"] in tool_ids


async def test_a_step_that_mixes_server_and_client_calls(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    await wait_for_handlers(system, "lookup_weather")
    model.script("mixed step", tool_calls=[call("lookup_weather", city="Rome"),
                                           call("display_quiz", **QUIZ)])  # fmt: skip
    model.script("my answers", reply="Feedback given.")
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[function_tool("lookup_weather"), DISPLAY_QUIZ],  # type: ignore[list-item]
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "mixed step"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    pending = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in pending] == ["display_quiz"]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, poll_interval_ms=50,
        tool_outputs=[{"tool_call_id": pending[0].id, "output": "my answers"}],
    )  # fmt: skip
    assert run.status == "completed"
    step = client.beta.threads.runs.steps.list(
        run_id=run.id, thread_id=thread.id, order="asc"
    ).data[0]
    outputs = [c.function.output for c in step.step_details.tool_calls]  # type: ignore[union-attr]
    assert outputs == ["18C and sunny in Rome", "my answers"]


async def test_a_webhook_handler_is_called_signed(
    client: OpenAI, model: ScriptedModelServer, system: System, webhook: WebhookServer
) -> None:
    await wait_for_handlers(system, "ship_order")
    model.script("ship it", tool_calls=[call("ship_order", order_id="A-17")])
    model.script("shipped", reply="Your order is on its way.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("ship_order")])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "ship it"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    done = wait_until(lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id))
                      .status == "completed" and r, timeout=30)  # fmt: skip
    step = client.beta.threads.runs.steps.list(
        run_id=done.id, thread_id=thread.id, order="asc"
    ).data[0]
    tool_call = step.step_details.tool_calls[0]  # type: ignore[union-attr]
    assert tool_call.function.output == "shipped A-17"  # type: ignore[union-attr]
    received = [c for c in webhook.calls if c["tool_call_id"] == tool_call.id]
    assert len(received) == 1
    assert received[0]["valid"]
    assert received[0]["body"] == {"order_id": "A-17"}
    assert received[0]["idempotency_key"] == f"{done.id}/{tool_call.id}"


async def test_a_webhook_signature_covers_call_and_function_and_expires(
    client: OpenAI, model: ScriptedModelServer, system: System, webhook: WebhookServer
) -> None:
    """The receiver's check (`verify`) accepts the request as sent, and refuses it replayed
    after the window, or with another call id, function or body."""
    await wait_for_handlers(system, "ship_order")
    model.script("ship B-2", tool_calls=[call("ship_order", order_id="B-2")])
    model.script("shipped B-2", reply="On its way.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("ship_order")])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "ship B-2"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=50)  # fmt: skip
    assert run.status == "completed"
    [sent] = [c for c in webhook.calls if c["body"] == {"order_id": "B-2"}]
    headers, raw = sent["headers"], sent["raw"]
    stamp = int(headers["X-Threadbus-Timestamp"])
    assert verify(SHIP_SECRET, headers, raw, now=stamp)
    assert not verify(SECRET, headers, raw, now=stamp)  # each webhook has its own secret
    assert not verify(SHIP_SECRET, headers, raw, now=stamp + REPLAY_WINDOW_SECONDS + 1)
    assert not verify(SHIP_SECRET, {**headers, "X-Threadbus-Tool-Call-Id": "call_other"}, raw,
                      now=stamp)  # fmt: skip
    assert not verify(SHIP_SECRET, {**headers, "X-Threadbus-Function": "refund_order"}, raw,
                      now=stamp)  # fmt: skip
    assert not verify(SHIP_SECRET, headers, b'{"order_id": "B-3"}', now=stamp)


@pytest.mark.parametrize(
    ("function", "error"),
    [
        ("redirecting", "answered HTTP 302 (a redirect, which is not followed)"),
        ("huge", "answer is larger than 512000 bytes"),
    ],
)
async def test_a_webhook_that_redirects_or_answers_too_much_gives_an_error_output(
    client: OpenAI, model: ScriptedModelServer, system: System, webhook: WebhookServer,
    function: str, error: str,
) -> None:  # fmt: skip
    await wait_for_handlers(system, function)
    model.script(f"call {function}", tool_calls=[call(function, order_id="C-1")])
    model.script(error, reply="That did not work.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool(function)])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"call {function}"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=50)  # fmt: skip
    assert run.status == "completed"
    step = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data[0]
    output = step.step_details.tool_calls[0].function.output  # type: ignore[union-attr]
    assert output is not None
    assert error in output
    assert output.startswith("Error:")
    paths = [c["path"] for c in webhook.calls if c["body"] == {"order_id": "C-1"}]
    assert "/ship_order" not in paths  # the redirect was not followed
