"""Two run-pollers and one run: racing for it, and a stale one waking after a takeover."""

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from schemas import topics
from schemas.events import ProcessRun
from services.core.supervisor import ServiceProcess
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.system import System, partition_of, wait_until


@pytest.fixture
def second_poller(system: System) -> Iterator[ServiceProcess]:
    """One more run-poller beside the suite's, both consuming."""
    poller = system.spawn("run_poller", label="run_poller_race")
    wait_until(lambda: system.ready("run_poller_race"), timeout=90)  # in its groups
    try:
        yield poller
    finally:
        poller.kill()  # not a graceful leave: see System.spawn


def _finished(client: OpenAI, thread_id: str, run_id: str) -> Any:
    run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
    return run if run.status in ("completed", "failed", "expired") else None


@pytest.mark.slow
@pytest.mark.usefixtures("second_poller")
def test_two_run_pollers_racing_for_one_run_drive_it_once(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    model.script("race for me", reply="Driven once.", delay_s=1)
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "race for me"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    # The same wake-up on every partition at once: each run-poller's consumers offer the run.
    keys = {partition_of(f"race-{i}"): f"race-{i}" for i in range(64)}
    assert len(keys) == 4
    for n, key in enumerate(keys.values()):
        order = ProcessRun(id=f"cmd_race_{n}", run_id=run.id, thread_id=thread.id)
        tap.publish(json.loads(order.model_dump_json()), key=key, topic=topics.RUNS)
    done = wait_until(lambda: _finished(client, thread.id, run.id), timeout=30)
    assert done.status == "completed"
    attempts = system.sql("SELECT attempts FROM runs WHERE id = $1", run.id)[0]["attempts"]
    assert attempts == 1  # one claim won; every other offer found it claimed
    asked = [r for r in model.requests if "race for me" in json.dumps(r["messages"][-1])]
    assert len(asked) == 1
    replies = [m for m in client.beta.threads.messages.list(thread_id=thread.id).data
               if m.role == "assistant"]  # fmt: skip
    assert len(replies) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("second_poller")
def test_a_stale_run_poller_waking_after_a_takeover_cannot_write(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    words = " ".join(f"s{i}" for i in range(200))
    model.script("stale owner", reply=words, chunk_delay_s=0.05, times=1)  # 10 s of tokens
    model.script("stale owner", reply="Written by the new owner.")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "stale owner"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_until(lambda: [e for e in tap.events(thread.id) if e["type"] == "thread.message.delta"])
    owner = system.sql("SELECT lease_owner FROM runs WHERE id = $1", run.id)[0]["lease_owner"]
    pid = int(owner.split(":")[1])
    label = next(label for label, p in system.services.items() if p.proc and p.proc.pid == pid)
    os.kill(pid, signal.SIGSTOP)  # frozen mid-answer, holding the lease
    try:
        done = wait_until(lambda: _finished(client, thread.id, run.id), timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)  # it wakes believing it still drives the run
    assert done.status == "completed"
    log = wait_until(lambda: f"run {run.id}: lease lost" in (text := system.log(label)) and text,
                     timeout=30)  # fmt: skip
    assert f"run {run.id}: lease lost" in log
    attempts = system.sql("SELECT attempts FROM runs WHERE id = $1", run.id)[0]["attempts"]
    assert attempts == 2
    replies = [m for m in client.beta.threads.messages.list(thread_id=thread.id).data
               if m.role == "assistant"]  # fmt: skip
    assert len(replies) == 1
    assert replies[0].content[0].text.value == "Written by the new owner."  # type: ignore[union-attr]
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "completed"
    finals = wait_until(lambda: [e for e in tap.events(thread.id)
                                 if e["type"] == "thread.run.completed"])  # fmt: skip
    assert len(finals) == 1
