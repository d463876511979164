"""Fault: the run-poller dies (SIGKILL) while the model is answering; the run still ends once."""

import asyncpg
import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.system import System, wait_until


@pytest.mark.slow
async def test_run_poller_killed_mid_answer(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    assistant = client.beta.assistants.create(name="Math Tutor", model="gpt-4o")
    model.script("crash-me", reply="Slow but steady.", delay_s=30, times=1)
    model.script("crash-me", reply="Answered after the crash.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "crash-me now"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    model.wait_for_request("crash-me", timeout=30)
    system.services["run_poller"].kill()
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
    replacement = system.spawn("run_poller")
    assert replacement.alive

    done = wait_until(
        lambda: (
            (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status
            == "completed"
            and r
        ),
        timeout=60,
    )
    assert done.usage is not None
    replies = [m for m in client.beta.threads.messages.list(thread_id=thread.id).data
               if m.role == "assistant"]  # fmt: skip
    assert len(replies) == 1
    assert replies[0].content[0].text.value == "Answered after the crash."  # type: ignore[union-attr]
    assert replies[0].status == "completed"
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert len(steps) == 1
    assert steps[0].status == "completed"

    conn = await asyncpg.connect(system.infra.database_url)
    try:
        attempts = await conn.fetchval("SELECT attempts FROM runs WHERE id = $1", run.id)
    finally:
        await conn.close()
    assert attempts == 2  # claimed by the killed poller, then taken over once

    # Exactly one completion went out on threadbus.events.
    completed = wait_until(
        lambda: [e for e in tap.events(thread.id) if e["type"] == "thread.run.completed"]
    )
    assert [e["data"]["id"] for e in completed] == [run.id]
    finals = [e for e in tap.events(thread.id) if e["type"] == "thread.message.completed"]
    assert len(finals) == 1
