"""One log format for every process: readable lines by default, JSON lines when asked, no ANSI
colour codes in either, and the run and thread a line is about."""

import json
import re
from typing import Any

from openai import OpenAI
from openai.types.beta.threads import Run

from services.core.supervisor import SERVICES
from tests.fakes.model_server import ScriptedModelServer
from tests.system import System, wait_until

STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
TEXT_LINE = re.compile(STAMPED.pattern + r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [a-z-]+ \S+: ")


def _failing_run(client: OpenAI, model: ScriptedModelServer, text: str) -> Run:
    """A run the model refuses: the run-poller logs its failure, naming the run."""
    model.script(text, status=400, error_message="refused for the log test")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "failed"
    return run


def test_every_service_logs_readable_lines_without_colour_codes(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    run = _failing_run(client, model, "log my failure")
    failed = wait_until(lambda: [line for line in system.log("run_poller").splitlines()
                                 if f"run {run.id} failed" in line])  # fmt: skip
    # The run from the message, the thread from the task that drove the run.
    assert failed[0].endswith(f" [run_id={run.id} thread_id={run.thread_id}]")
    assert TEXT_LINE.match(failed[0])
    for label in SERVICES:
        text = system.log(label)
        assert "\x1b[" not in text, f"{label} logged ANSI codes"
        stamped = [line for line in text.splitlines() if STAMPED.match(line)]
        assert stamped, label
        odd = [line for line in stamped if not TEXT_LINE.match(line)]
        assert odd == [], f"{label}: {odd[:3]}"
    poller = system.log("run_poller")
    assert re.search(r" INFO run-poller faststream: FastStream app started successfully", poller)
    assert re.search(r" INFO api uvicorn\.error: Uvicorn running on ", system.log("api"))


def test_json_lines_when_asked_carry_the_run_and_thread(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    poller = system.spawn("run_poller", label="run_poller_json", THREADBUS_LOG_FORMAT="json")
    try:
        wait_until(lambda: system.ready("run_poller_json"), timeout=90, explain=system.diagnose)
        system.services["run_poller"].kill()  # the JSON one drives the run
        run = _failing_run(client, model, "log my failure as json")

        def entries() -> list[dict[str, Any]]:
            lines = system.log("run_poller_json").splitlines()
            return [json.loads(line) for line in lines if line.strip()]  # every line parses

        failed = wait_until(lambda: [e for e in entries() if e.get("run_id") == run.id
                                     and "failed" in e["message"]])  # fmt: skip
        assert failed[0]["thread_id"] == run.thread_id
        assert failed[0]["level"] == "INFO"
        assert failed[0]["service"] == "run-poller"
        assert failed[0]["logger"] == "services.run_poller.engine"
        assert failed[0]["message"].startswith(f"run {run.id} failed: ")
        started = [e for e in entries() if e["logger"] == "faststream"]
        assert any("started successfully" in e["message"] for e in started)
        assert "\x1b[" not in system.log("run_poller_json")
    finally:
        system.spawn("run_poller")
        poller.kill()
