"""The sweeper's paths, each reached by the fault that leads there: runs nobody drives past
their expiry, a cancel whose run-poller died, a server-side call whose executor died, and a
run that never stops calling tools."""

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from services.core.embedded import free_port
from tests.e2e.test_function_tools import call, function_tool
from tests.fakes.model_server import ScriptedModelServer
from tests.system import API_KEY, System, answers, wait_until

TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")


@contextlib.contextmanager
def run_pollers_frozen(system: System) -> Iterator[None]:
    """Every run-poller stopped (SIGSTOP) until the block ends: nobody drives or sweeps."""
    pids = [p.proc.pid for label, p in system.services.items()
            if label.startswith("run_poller") and p.alive and p.proc]  # fmt: skip
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def short_lived_api(system: System, seconds: int) -> Iterator[OpenAI]:
    """A second API whose runs expire after `seconds`."""
    port = free_port()
    api = system.spawn("api", label="api_short_expiry", THREADBUS_API_PORT=str(port),
                       THREADBUS_RUN_EXPIRES_SECONDS=str(seconds))  # fmt: skip
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY)
    finally:
        api.stop()


def _run(client: OpenAI, thread_id: str, run_id: str) -> Any:
    run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
    return run if run.status in TERMINAL else None


@pytest.mark.slow
def test_a_queued_run_nobody_drove_before_its_expiry_ends_expired(
    model: ScriptedModelServer, system: System, client: OpenAI
) -> None:
    with short_lived_api(system, 3) as short:
        assistant = short.beta.assistants.create(model="gpt-4o")
        thread = short.beta.threads.create(messages=[{"role": "user", "content": "too late"}])
        with run_pollers_frozen(system):
            run = short.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
            time.sleep(4)  # past expires_at, still queued
            assert short.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued"
        done = wait_until(lambda: _run(short, thread.id, run.id), timeout=30)
        assert done.status == "expired"
        assert not [r for r in model.requests if "too late" in str(r["messages"])]
        assert client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data == []
        # The thread is free again (a run of the usual 10 minutes, from the suite's API).
        model.script("after the expiry", reply="Fresh run.")
        client.beta.threads.messages.create(thread.id, role="user", content="after the expiry")
        again = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
        )
        assert again.status == "completed"


@pytest.mark.slow
def test_an_in_progress_run_whose_poller_died_past_its_expiry_ends_expired(
    model: ScriptedModelServer, system: System
) -> None:
    words = " ".join(f"e{i}" for i in range(400))
    model.script("die and expire", reply=words, chunk_delay_s=0.05, times=1)
    with short_lived_api(system, 4) as client:
        assistant = client.beta.assistants.create(model="gpt-4o")
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": "die and expire"}]
        )
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        model.wait_for_request("die and expire", timeout=30)
        system.services["run_poller"].kill()  # the owner dies; the lease runs out unrenewed
        time.sleep(5)  # past expires_at
        system.spawn("run_poller")  # its sweeper finds the run overdue with a dead lease
        done = wait_until(lambda: _run(client, thread.id, run.id), timeout=60)
        assert done.status == "expired"
        assert done.expires_at is None


@pytest.mark.slow
def test_a_cancel_whose_run_poller_died_is_finished_by_the_sweeper(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    words = " ".join(f"c{i}" for i in range(400))
    model.script("cancel an orphan", reply=words, chunk_delay_s=0.05, times=1)
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "cancel an orphan"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    model.wait_for_request("cancel an orphan", timeout=30)
    system.services["run_poller"].kill()  # nobody will stop the model stream now
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status == "cancelling"
    system.spawn("run_poller")
    done = wait_until(lambda: _run(client, thread.id, run.id), timeout=60)
    assert done.status == "cancelled"


@pytest.mark.slow
def test_a_call_whose_executor_died_is_sent_again_and_started_once_more(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    poller = system.spawn("run_poller", label="run_poller_resend",
                          THREADBUS_TOOL_WAIT_SECONDS="3")  # fmt: skip
    try:
        wait_until(lambda: system.ready("run_poller_resend"), timeout=90, explain=system.diagnose)
        system.services["run_poller"].kill()
        model.script("survive the executor", tool_calls=[call("record_start", seconds=30)],
                     times=1)  # fmt: skip
        model.script("started once as", reply="The call was answered.")
        assistant = client.beta.assistants.create(
            model="gpt-4o", tools=[function_tool("record_start")]
        )  # type: ignore[misc]
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": "survive the executor"}]
        )
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        started = "SELECT started_by FROM tool_calls WHERE run_id = $1 AND started_by IS NOT NULL"
        first = wait_until(lambda: system.sql(started, run.id), timeout=30)[0]["started_by"]
        system.services["tool_executor"].kill()  # the handler dies with it, mid-call
        system.spawn("tool_executor")
        # No result comes; the sweeper re-sends the call, and once the dead executor's
        # heartbeat is stale (10 s) the new one may start it again.
        done = wait_until(lambda: _run(client, thread.id, run.id), timeout=120)
        assert done.status == "completed"
        second = system.sql("SELECT started_by FROM tool_calls WHERE run_id = $1", run.id)
        assert second[0]["started_by"] != first
    finally:
        system.spawn("run_poller")
        poller.kill()


@pytest.mark.slow
def test_a_run_that_keeps_calling_tools_fails_after_max_steps(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    poller = system.spawn("run_poller", label="run_poller_steps", THREADBUS_MAX_STEPS="3")
    try:
        wait_until(lambda: system.ready("run_poller_steps"), timeout=90, explain=system.diagnose)
        system.services["run_poller"].kill()
        model.script("loop forever", tool_calls=[call("lookup_weather", city="Loop")])
        model.script("sunny in Loop", tool_calls=[call("lookup_weather", city="Loop")])
        assistant = client.beta.assistants.create(
            model="gpt-4o", tools=[function_tool("lookup_weather")]
        )  # type: ignore[misc]
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "loop forever"}])
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        done = wait_until(lambda: _run(client, thread.id, run.id), timeout=60)
        assert done.status == "failed"
        assert done.last_error is not None
        assert "3 steps" in done.last_error.message
        steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
        assert len(steps) == 3
    finally:
        system.spawn("run_poller")
        poller.kill()
