"""`threadbus status` and `threadbus tail` against the running system, as an operator runs them."""

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from typing import Any

from openai import OpenAI

from services.core.ops import GROUPS, SERVICES
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.system import System, wait_until


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.core.cli", *args]


def _env(system: System) -> dict[str, str]:
    return os.environ | {
        "THREADBUS_DATABASE_URL": system.infra.database_url,
        "THREADBUS_KAFKA_BOOTSTRAP_SERVERS": system.infra.bootstrap,
    }


def _status(system: System) -> dict[str, Any]:
    done = subprocess.run(_command("status", "--json"), env=_env(system),
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_status_shows_services_runs_outbox_lag_and_dead_letters(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    before = _status(system)
    assert set(before["services"]) == set(SERVICES)
    assert all(seen["live"] >= 1 and seen["consuming"] >= 1
               for seen in before["services"].values()), before["services"]  # fmt: skip
    assert set(before["lag"]) == set(GROUPS)

    model.script("status check", reply="Counted.")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "status check"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "completed"
    tap.publish(b"not an event", key=f"thread_{uuid.uuid4().hex}")  # dead-lettered

    def moved() -> dict[str, Any] | None:
        now = _status(system)
        done = now["runs"].get("completed", 0) == before["runs"].get("completed", 0) + 1
        lettered = now["dlq"] == before["dlq"] + 1
        caught_up = now["lag"]["run-starter"] == 0 and now["outbox"]["waiting"] == 0
        return now if done and lettered and caught_up else None

    after = wait_until(moved, timeout=60, interval=0.5)
    assert after["outbox"]["oldest_seconds"] == 0
    assert after["outbox"]["dead"] == before["outbox"]["dead"]
    readable = subprocess.run(_command("status"), env=_env(system),
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    lines = readable.stdout.splitlines()
    assert lines[0].startswith("services")
    assert any(line.strip().startswith("run-poller ") for line in lines)
    assert any(line.startswith("consumer lag: ") for line in lines)


def test_status_names_a_broker_it_cannot_reach(system: System) -> None:
    env = _env(system) | {"THREADBUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    done = subprocess.run(_command("status", "--json"), env=env,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    report = json.loads(done.stdout)
    assert report["lag"] is None
    assert report["dlq"] is None
    assert report["broker_error"]
    assert "runs" in report  # what Postgres knows is still there


def test_tail_prints_a_threads_events_as_they_happen(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    thread = client.beta.threads.create()
    tail = subprocess.Popen(_command("tail", thread.id), env=_env(system),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    assert tail.stdout is not None
    reader = threading.Thread(
        target=lambda: lines.extend(line.rstrip("\n") for line in tail.stdout or []), daemon=True
    )
    reader.start()
    try:
        wait_until(lambda: any(line.startswith("# following ") for line in lines), timeout=30)
        model.script("tail me", reply="Tailed words arrive here.")
        assistant = client.beta.assistants.create(model="gpt-4o")
        client.beta.threads.messages.create(thread.id, role="user", content="tail me")
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
        )
        wait_until(lambda: any(" thread.run.completed " in line for line in lines), timeout=30)
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(15) == 0
    events = [line.split()[1] for line in lines if not line.startswith("#")]
    assert events[0] == "thread.message.created"  # the user's message: after the tail began
    assert events.index("thread.run.created") < events.index("thread.run.completed")
    deltas = [line for line in lines if " thread.message.delta " in line]
    assert all(run.id in line for line in deltas)
    text = "".join(json.loads(line.split(run.id, 1)[1].strip()) for line in deltas)
    assert text == "Tailed words arrive here."
    completed = next(line for line in lines if " thread.run.completed " in line)
    assert completed.endswith(" completed")
