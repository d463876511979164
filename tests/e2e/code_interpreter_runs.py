"""Helpers for runs whose model calls code_interpreter: script the call, run, read the step."""

import json
import secrets
from dataclasses import dataclass
from typing import Any

from openai import OpenAI
from openai.types.beta.threads import Run
from openai.types.beta.threads.runs import CodeInterpreterToolCall

from tests.fakes.model_server import ScriptedModelServer


@dataclass
class CodeRun:
    """A finished run that ran one cell: the run, the call (input, outputs), the reply."""

    run: Run
    call: CodeInterpreterToolCall
    logs: str
    reply: Any


def code_assistant(client: OpenAI, **extra: Any) -> str:
    """An assistant with the code_interpreter tool."""
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        instructions="Use code_interpreter for anything numeric.",
        tools=[{"type": "code_interpreter"}],
        **extra,
    )
    return assistant.id


def run_code(
    client: OpenAI,
    model: ScriptedModelServer,
    assistant_id: str,
    thread_id: str,
    code: str,
    *,
    answer_on: str,
    reply: str = "Done.",
    attachments: list[dict[str, Any]] | None = None,
) -> CodeRun:
    """Ask (a unique message) and have the model run `code`; once the tool's output contains
    `answer_on`, the model answers `reply`. Returns the finished run and its call."""
    ask = f"please run cell {secrets.token_hex(4)}"
    call = {"name": "code_interpreter", "arguments": json.dumps({"code": code})}
    model.script(ask, tool_calls=[call])
    model.script(answer_on, reply=reply)
    client.beta.threads.messages.create(
        thread_id,
        role="user",
        content=ask,
        attachments=attachments or [],  # type: ignore[arg-type]
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, poll_interval_ms=50
    )
    return finished(client, run)


def finished(client: OpenAI, run: Run) -> CodeRun:
    """The run's first code_interpreter call and its newest message."""
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=run.thread_id, order="asc")
    tool_steps = [s for s in steps.data if s.step_details.type == "tool_calls"]
    assert tool_steps, f"no tool step: run {run.status} {run.last_error}"
    details = tool_steps[0].step_details
    assert details.type == "tool_calls"
    call = details.tool_calls[0]
    assert isinstance(call, CodeInterpreterToolCall), call
    logs = "".join(o.logs or "" for o in call.code_interpreter.outputs if o.type == "logs")
    messages = client.beta.threads.messages.list(run.thread_id, order="desc", limit=1)
    return CodeRun(run, call, logs, messages.data[0])
