"""Conformance: runs (non-streaming), through the official SDK with strict response validation.

Covers scenarios of the reference's section 7:
21 create returns a queued run snapshotting the assistant; 22 queued while the worker is paused,
then in_progress and completed; 23 create_and_poll and the poll-helper headers and interval;
24 the assistant reply in the thread; 25 per-run overrides; 26 additional_messages;
27 the thread lock; 28 update, list and wrong-thread retrieve; 29 create_and_run;
30 max_completion_tokens and max_prompt_tokens; 31 truncation_strategy last_messages;
32 model failures (server_error, rate_limit_exceeded, invalid_prompt); 38 cancel.
"""

import itertools
import os
import re
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.system import API_KEY, System

EXPIRES_SECONDS = 600
POLL_AFTER_MS = 50


def function_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


@contextmanager
def paused(system: System, label: str = "run_poller") -> Iterator[None]:
    """Freeze a service (SIGSTOP) for a moment; it always resumes (SIGCONT). Keep it under 3 s."""
    process = system.services[label].proc
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def sent_with(model: ScriptedModelServer, marker: str) -> list[dict[str, Any]]:
    """Request bodies the model received whose messages mention `marker`."""
    return [r for r in model.requests if marker in str(r["messages"])]


def text_of(message: Any) -> str:
    return str(message.content[0].text.value)


def test_s21_create_returns_a_queued_run_snapshotting_the_assistant(client: OpenAI) -> None:
    """21: runs.create → queued, started_at/usage None, expires_at = created_at + 600, defaults."""
    assistant = client.beta.assistants.create(
        model="gpt-4o", instructions="Answer briefly (s21).",
        tools=[function_tool("s21_lookup")],  # type: ignore[list-item]
    )  # fmt: skip
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s21 hello"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    assert run.object == "thread.run"
    assert run.id.startswith("run_")
    assert (run.thread_id, run.assistant_id) == (thread.id, assistant.id)
    assert run.status == "queued"
    assert run.started_at is None
    assert run.expires_at == run.created_at + EXPIRES_SECONDS
    assert run.usage is None
    assert run.required_action is None
    assert run.last_error is None
    assert run.model == assistant.model
    assert run.instructions == assistant.instructions
    assert run.tools == assistant.tools
    assert run.truncation_strategy is not None
    assert run.truncation_strategy.type == "auto"
    assert run.tool_choice == "auto"
    assert run.parallel_tool_calls is True
    assert run.response_format == "auto"
    assert run.metadata == {}
    assert client.beta.threads.runs.poll(run.id, thread_id=thread.id).status == "completed"

    # An assistant without instructions still gives the run a string (never null).
    plain = client.beta.assistants.create(model="gpt-4o")
    other = client.beta.threads.create(messages=[{"role": "user", "content": "s21 plain"}])
    bare = client.beta.threads.runs.create(thread_id=other.id, assistant_id=plain.id)
    assert isinstance(bare.instructions, str)
    assert bare.instructions == ""
    assert bare.tools == []
    assert client.beta.threads.runs.poll(bare.id, thread_id=other.id).status == "completed"


def test_s22_queued_while_the_worker_is_paused_then_completed(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    """22: worker paused → retrieve keeps returning queued; resumed → in_progress, completed."""
    model.script("s22 question", reply="s22 answer", delay_s=3.0)  # in progress while looked at
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s22 question"}])
    with paused(system):
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        for _ in range(3):
            seen = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
            assert seen.status == "queued"
            assert seen.started_at is None
            time.sleep(0.2)

    model.wait_for_request("s22 question", timeout=15)
    busy = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert busy.status == "in_progress"
    assert busy.started_at is not None
    assert busy.completed_at is None
    assert busy.usage is None

    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed"
    assert done.started_at is not None
    assert done.completed_at is not None
    assert done.completed_at >= done.started_at >= done.created_at
    assert done.expires_at is None
    assert done.usage is not None
    assert done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_s23_create_and_poll_uses_the_poll_helper_and_the_servers_interval(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """23: create_and_poll → completed; GETs carry the poll-helper header, spaced as told."""
    model.script("s23 question", reply="s23 answer", delay_s=0.6)
    gets: list[tuple[float, Any]] = []
    intervals: list[str | None] = []

    def on_request(request: Any) -> None:
        if request.method == "GET":
            gets.append((time.monotonic(), request))

    def on_response(response: Any) -> None:
        if response.request.method == "GET":
            intervals.append(response.headers.get("openai-poll-after-ms"))

    http = openai.DefaultHttpxClient(
        event_hooks={"request": [on_request], "response": [on_response]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        recorded = OpenAI(
            base_url=str(client.base_url), api_key=API_KEY, http_client=http,
            _strict_response_validation=True,
        )  # fmt: skip
    try:
        assistant = recorded.beta.assistants.create(model="gpt-4o")
        thread = recorded.beta.threads.create(
            messages=[{"role": "user", "content": "s23 question"}]
        )
        run = recorded.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
    finally:
        recorded.close()
        http.close()

    assert run.status == "completed"
    polls = [(at, r) for at, r in gets if r.url.path.endswith(f"/runs/{run.id}")]
    assert len(polls) >= 3  # the model took 0.6 s to answer
    for _, request in polls:
        assert request.headers.get("X-Stainless-Poll-Helper") == "true"
        assert "X-Stainless-Custom-Poll-Interval" not in request.headers
    assert intervals
    assert set(intervals) == {str(POLL_AFTER_MS)}
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(polls)]
    # The SDK sleeps what the server said (50 ms), not its 1 s default.
    assert min(gaps) >= POLL_AFTER_MS / 1000 * 0.9
    assert max(gaps) < 0.9


def test_s24_the_reply_is_the_newest_message_and_belongs_to_the_run(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """24: after completion the newest message is the assistant's, with run_id and assistant_id."""
    model.script("s24 question", reply="s24 answer")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s24 question"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"

    listed = client.beta.threads.messages.list(thread_id=thread.id).data
    assert [m.role for m in listed] == ["assistant", "user"]
    reply, question = listed
    assert reply.run_id == run.id
    assert reply.assistant_id == assistant.id
    assert reply.status == "completed"
    assert text_of(reply) == "s24 answer"
    assert question.run_id is None
    assert question.assistant_id is None

    by_run = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data
    assert [m.id for m in by_run] == [reply.id]


def test_s25_run_overrides_apply_to_the_run_only(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """25: model/instructions/additional_instructions/tools/metadata/temperature overrides."""
    assistant = client.beta.assistants.create(
        model="gpt-4o", instructions="s25 assistant rules", temperature=0.9,
        tools=[function_tool("s25_lookup")],  # type: ignore[list-item]
    )  # fmt: skip
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s25 question"}])
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, model="other", instructions="X",
        additional_instructions="Y", tools=[], metadata={"m": "1"}, temperature=0.5,
    )  # fmt: skip
    assert run.model == "other"
    assert run.instructions.startswith("X")
    assert run.instructions.endswith("Y")
    assert run.tools == []
    assert run.metadata == {"m": "1"}
    assert run.temperature == 0.5
    assert client.beta.threads.runs.poll(run.id, thread_id=thread.id).status == "completed"

    assert client.beta.assistants.retrieve(assistant.id) == assistant
    sent = sent_with(model, "s25 question")[-1]
    assert sent["model"] == "other"
    assert sent["temperature"] == 0.5
    assert "tools" not in sent
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("X")
    assert sent["messages"][0]["content"].endswith("Y")


def test_s26_additional_messages_precede_the_reply(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """26: additional_messages are in the thread before the run's assistant reply (asc)."""
    model.script("s26 extra", reply="s26 answer")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s26 first"}])
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id,
        additional_messages=[{"role": "user", "content": "s26 extra"}],
    )  # fmt: skip
    assert client.beta.threads.runs.poll(run.id, thread_id=thread.id).status == "completed"

    listed = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [(m.role, text_of(m)) for m in listed] == [
        ("user", "s26 first"),
        ("user", "s26 extra"),
        ("assistant", "s26 answer"),
    ]
    assert listed[2].run_id == run.id
    sent = sent_with(model, "s26 extra")[-1]
    assert sent["messages"][-1] == {"role": "user", "content": "s26 extra"}


def test_s27_an_active_run_locks_the_thread(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    """27: while a run is queued/in_progress/requires_action, new runs and messages are 400."""
    # The model holds the first turn, so the run is in progress while it is looked at.
    model.script("s27 question", tool_calls=[{"name": "s27_lookup", "arguments": "{}"}],
                 delay_s=3.0)  # fmt: skip
    model.script("s27 output", reply="s27 answer")
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[function_tool("s27_lookup")],  # type: ignore[list-item]
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s27 question"}])
    locked_message = re.escape(f"Can't add messages to {thread.id} while a run ")

    def assert_locked(run_id: str) -> None:
        with pytest.raises(openai.BadRequestError, match=run_id) as caught:
            client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        assert caught.value.status_code == 400
        with pytest.raises(openai.BadRequestError, match=locked_message) as caught:
            client.beta.threads.messages.create(thread_id=thread.id, role="user", content="more")
        assert caught.value.status_code == 400
        assert caught.value.body == {
            "message": f"Can't add messages to {thread.id} while a run {run_id} is active.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }

    with paused(system):
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued"
        assert_locked(run.id)

    model.wait_for_request("s27 question", timeout=15)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
    assert_locked(run.id)

    run = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "requires_action"
    assert run.required_action is not None
    assert_locked(run.id)

    pending = run.required_action.submit_tool_outputs.tool_calls
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id,
        tool_outputs=[{"tool_call_id": c.id, "output": "s27 output"} for c in pending],
    )  # fmt: skip
    assert done.status == "completed"
    # Unlocked again.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="s27 after")


def test_s28_update_list_and_retrieve_from_the_wrong_thread(client: OpenAI) -> None:
    """28: runs.update sets metadata only; runs.list is newest first; wrong thread → 404."""
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s28 question"}])
    first = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    second = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert (first.status, second.status) == ("completed", "completed")

    updated = client.beta.threads.runs.update(first.id, thread_id=thread.id, metadata={"k": "v"})
    assert updated.id == first.id
    assert updated.metadata == {"k": "v"}
    assert updated.status == "completed"
    assert updated.completed_at == first.completed_at
    again = client.beta.threads.runs.retrieve(first.id, thread_id=thread.id)
    assert again.metadata == {"k": "v"}

    listed = client.beta.threads.runs.list(thread_id=thread.id).data
    assert [r.id for r in listed] == [second.id, first.id]

    elsewhere = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError) as caught:
        client.beta.threads.runs.retrieve(first.id, thread_id=elsewhere.id)
    assert caught.value.status_code == 404


def test_s29_create_and_run_makes_a_thread(client: OpenAI, model: ScriptedModelServer) -> None:
    """29: threads.create_and_run → queued run on a new thread holding the message; _poll ends."""
    model.script("s29 hi", reply="s29 hello")
    assistant = client.beta.assistants.create(model="gpt-4o")
    run = client.beta.threads.create_and_run(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "s29 hi"}]}
    )
    assert run.status == "queued"
    assert run.thread_id.startswith("thread_")
    assert run.assistant_id == assistant.id
    thread = client.beta.threads.retrieve(run.thread_id)
    assert thread.id == run.thread_id
    listed = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert (listed[0].role, text_of(listed[0])) == ("user", "s29 hi")
    assert client.beta.threads.runs.poll(run.id, thread_id=thread.id).status == "completed"

    polled = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "s29 again"}]}
    )
    assert polled.status == "completed"
    assert polled.thread_id not in (thread.id, None)


def test_s30_max_completion_tokens_ends_the_run_incomplete(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """30: max_completion_tokens=256 with an over-long answer → incomplete, message incomplete."""
    model.script("s30 completion", reply=" ".join(f"word{i}" for i in range(300)))
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s30 completion"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    assert run.max_completion_tokens == 256
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage is not None
    assert run.usage.completion_tokens == 256

    sent = sent_with(model, "s30 completion")
    assert [r["max_completion_tokens"] for r in sent] == [256]

    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.role == "assistant"
    assert reply.run_id == run.id
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_tokens"
    assert len(text_of(reply).split()) == 256


def test_s30_max_prompt_tokens_ends_the_run_incomplete(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """30: an oversized prompt with max_prompt_tokens=256 → incomplete (max_prompt_tokens)."""
    question = "s30prompt " + " ".join(f"term{i}" for i in range(400))
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": question}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=256
    )
    assert run.max_prompt_tokens == 256
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_prompt_tokens"
    assert sent_with(model, "s30prompt") == []  # the model was never asked
    roles = [m.role for m in client.beta.threads.messages.list(thread_id=thread.id).data]
    assert roles == ["user"]


def test_s31_last_messages_truncation_sends_only_the_newest_message(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """31: truncation_strategy last_messages=1 → echoed; the model sees only the newest message."""
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="s31 rules")
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "s31 first"},
            {"role": "assistant", "content": "s31 second"},
            {"role": "user", "content": "s31 newest"},
        ]
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id,
        truncation_strategy={"type": "last_messages", "last_messages": 1},
    )  # fmt: skip
    assert run.status == "completed"
    assert run.truncation_strategy is not None
    assert run.truncation_strategy.type == "last_messages"
    assert run.truncation_strategy.last_messages == 1
    sent = sent_with(model, "s31 newest")
    assert len(sent) == 1
    assert sent[0]["messages"] == [
        {"role": "system", "content": "s31 rules"},
        {"role": "user", "content": "s31 newest"},
    ]


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "server_error"), (429, "rate_limit_exceeded"), (400, "invalid_prompt")],
)
def test_s32_a_model_failure_fails_the_run(
    client: OpenAI, model: ScriptedModelServer, status: int, code: str
) -> None:
    """32: scripted model failure → failed, failed_at set, last_error.code by kind."""
    marker = f"s32 fail {status}"
    model.script(marker, status=status)  # every attempt fails, retries included
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": marker}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "failed"
    assert run.failed_at is not None
    assert run.completed_at is None
    assert run.last_error is not None
    assert run.last_error.code == code
    assert run.last_error.message
    assert sent_with(model, marker)
    # Threadbus writes a run step only once the model has answered: a model that fails
    # before answering leaves no step at all (so there is no open step to mark failed).
    assert client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data == []
    roles = [m.role for m in client.beta.threads.messages.list(thread_id=thread.id).data]
    assert roles == ["user"]


def test_s38_cancel(client: OpenAI, model: ScriptedModelServer) -> None:
    """38: cancel an in_progress run → cancelling/cancelled, then cancelled; terminal → 400."""
    model.script("s38 slow", reply="s38 too late", delay_s=5)
    model.script("s38 again", reply="s38 answer")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s38 slow"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    model.wait_for_request("s38 slow", timeout=15)

    started = time.monotonic()
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.id == run.id
    assert cancelling.status in ("cancelling", "cancelled")
    cancelled = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert time.monotonic() - started < 4  # the slow model answer was not awaited
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    assert cancelled.completed_at is None
    assert cancelled.expires_at is None
    # No step was written: the model never answered (steps are written once it has).
    for step in client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data:
        assert step.status == "cancelled"
    roles = [m.role for m in client.beta.threads.messages.list(thread_id=thread.id).data]
    assert roles == ["user"]

    # The thread is unlocked: a message and a new run are accepted.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="s38 again")
    done = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert done.status == "completed"
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run") as caught:
        client.beta.threads.runs.cancel(done.id, thread_id=thread.id)
    assert caught.value.status_code == 400


def test_s38_cancel_a_run_that_requires_action(client: OpenAI, model: ScriptedModelServer) -> None:
    """38: cancel a run in requires_action → cancelled, its open tool_calls step cancelled."""
    model.script("s38 tool", tool_calls=[{"name": "s38_lookup", "arguments": '{"q": 1}'}])
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[function_tool("s38_lookup")],  # type: ignore[list-item]
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "s38 tool"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"

    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status in ("cancelling", "cancelled")
    cancelled = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    assert cancelled.required_action is None

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "cancelled")]
    assert steps[0].cancelled_at is not None
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run"):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
