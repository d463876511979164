"""Prometheus metrics move as runs go through: scraped from the API's port and every worker's
probe port, and parsed with Prometheus' own text parser."""

import asyncio
import re
from collections.abc import Iterable

import httpx
from openai import OpenAI

from services.core.ops import GROUPS
from tests.e2e.code_interpreter_runs import code_assistant, run_code
from tests.e2e.test_function_tools import call, function_tool, wait_for_handlers
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.prometheus import Samples, moved, parse, value
from tests.system import System, wait_until

IDS = re.compile(
    r"^((asst|call|cmd|dlq|evt|key|msg|proj|req|run|step|thread|vs|vsfb)_|file-)[A-Za-z0-9]{8,}$"
)
"""An id of the API's objects (`services/core/ids.py`): a prefix and random characters."""


def scrape(system: System, service: str) -> Samples:
    """The sum over the live processes of `service` (the API: its port; workers: their probe
    port) of every sample."""
    total = Samples()
    for process in list(system.services.values()):
        if process.name != service or not process.alive:
            continue
        port = process.env.get("THREADBUS_HEALTH_PORT") if service != "api" else system.api_port
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=15)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=")
        total.update(parse(answer.text))
    return total


def label_values(samples: Iterable[tuple[str, frozenset[tuple[str, str]]]]) -> set[str]:
    return {v for _, labels in samples for _, v in labels}


def test_metrics_move_as_runs_go_through_the_model_a_tool_a_stream_and_the_dlq(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    asyncio.run(wait_for_handlers(system, "lookup_weather"))
    services = ("api", "run_poller", "tool_executor", "run_starter", "message_archiver",
                "file_indexer")  # fmt: skip
    before = {name: scrape(system, name) for name in services}

    # A run that calls a server-side function, then answers slowly, streamed.
    model.script("metered weather", tool_calls=[call("lookup_weather", city="Tromsø")])
    model.script("sunny in Tromsø", reply="Sunny, metered and slow. " * 5, chunk_delay_s=0.2)
    # (twenty words, four seconds: the stream is still open when the scrape during it returns)
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[function_tool("lookup_weather")]
    )  # type: ignore[misc]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "metered weather"}])
    during = None
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            if event.event == "thread.message.delta" and during is None:
                during = scrape(system, "api")
    finished = stream.current_run
    assert finished is not None
    assert finished.status == "completed"
    assert during is not None
    assert moved(before["api"], during, "threadbus_active_streams") == 1
    # A run the model refuses.
    model.script("metered refusal", status=400, error_message="No.")
    failing = client.beta.threads.create(messages=[{"role": "user", "content": "metered refusal"}])
    refused = client.beta.threads.runs.create_and_poll(
        thread_id=failing.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert refused.status == "failed"
    # A record that is not an event: the run-starter parks it on the DLQ.
    tap.publish(b"not an event, metered", key="thread_metered")
    wait_until(lambda: moved(before["run_starter"], scrape(system, "run_starter"),
                             "threadbus_dead_letters_total", group="run-starter") == 1)  # fmt: skip

    after = {name: scrape(system, name) for name in services}
    api, poller, executor = after["api"], after["run_poller"], after["tool_executor"]
    assert value(api, "threadbus_active_streams") == value(
        before["api"], "threadbus_active_streams"
    )
    was = before["run_poller"]
    # Runs by status, and each phase of a run: two queued waits, three model turns, one wait
    # for a tool, two ends.
    assert moved(before["api"], api, "threadbus_run_transitions_total", status="queued") >= 2
    assert moved(was, poller, "threadbus_run_transitions_total", status="completed") >= 1
    assert moved(was, poller, "threadbus_run_transitions_total", status="failed") >= 1
    for phase, least in (("queued", 2), ("model", 3), ("tools", 1), ("total", 2)):
        assert moved(was, poller, "threadbus_run_phase_seconds_count", phase=phase) >= least, phase
    assert moved(was, poller, "threadbus_run_phase_seconds_sum", phase="tools") > 0
    # The model, by model name.
    ok = moved(was, poller, "threadbus_model_request_duration_seconds_count",
               model="gpt-4o", outcome="ok")  # fmt: skip
    assert ok >= 2
    assert moved(was, poller, "threadbus_model_request_duration_seconds_count",
                 model="gpt-4o", outcome="error") >= 1  # fmt: skip
    assert moved(was, poller, "threadbus_model_errors_total",
                 model="gpt-4o", code="invalid_prompt") >= 1  # fmt: skip
    assert moved(was, poller, "threadbus_model_tokens_total", model="gpt-4o",
                 type="completion") >= ok  # fmt: skip
    # The function, on the tool-executor; it did not fail.
    assert moved(before["tool_executor"], executor, "threadbus_tool_call_duration_seconds_count",
                 tool="function", function="lookup_weather") == 1  # fmt: skip
    assert moved(before["tool_executor"], executor, "threadbus_tool_call_failures_total",
                 function="lookup_weather") == 0  # fmt: skip
    # The API's requests, by route template.
    runs_route = "/v1/threads/{thread_id}/runs"
    assert moved(before["api"], api, "threadbus_http_request_duration_seconds_count",
                 method="POST", route=runs_route, status="200") == 2  # fmt: skip
    # The outbox relayed what the runs wrote (one relay is active, in whichever process).
    relayed = sum(moved(before[n], after[n], "threadbus_outbox_published_records_total")
                  for n in services)  # fmt: skip
    assert relayed >= 20

    # System-wide gauges, sampled by the API when scraped (at most every 5 s): the DLQ grew,
    # lag drains, the outbox empties.
    def settled() -> Samples | None:
        now = scrape(system, "api")
        grew = moved(before["api"], now, "threadbus_dlq_records") == 1
        caught_up = value(now, "threadbus_consumer_lag_records", group="run-starter") == 0
        empty = value(now, "threadbus_outbox_backlog_records") == 0
        return now if grew and caught_up and empty else None

    now = wait_until(settled, timeout=30, interval=1)
    assert value(now, "threadbus_sample_up", source="postgres") == 1
    assert value(now, "threadbus_sample_up", source="broker") == 1
    assert {labels for n, labels in now if n == "threadbus_consumer_lag_records"} == {
        frozenset({("group", group)}) for group in GROUPS
    }
    assert value(now, "threadbus_workers", service="run-poller") >= 1
    assert value(now, "threadbus_runs", status="requires_action") >= 0
    # Reading the groups' offsets for the lag is not logged as group membership each scrape.
    assert "Discovered coordinator" not in system.log("api")
    # No label carries an id, on any process.
    for name in services:
        found = scrape(system, name)
        assert value(found, "process_cpu_seconds_total") > 0, name
        assert not [v for v in label_values(found) if IDS.match(v)], name


def test_indexing_and_the_code_interpreter_move_their_metrics(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    indexer, executor = scrape(system, "file_indexer"), scrape(system, "tool_executor")
    # Two files into a store: one indexes, one cannot be parsed.
    store = client.vector_stores.create(name="metered")
    files = {"metered.md": b"# Metered\n\nFjords are deep.", "metered.pdf": b"%PDF-1.4 not"}
    ids = [client.files.create(file=(n, d), purpose="assistants").id for n, d in files.items()]
    client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=ids, poll_interval_ms=100
    )
    indexed = scrape(system, "file_indexer")
    assert moved(indexer, indexed, "threadbus_files_indexed_total", outcome="completed") == 1
    assert moved(indexer, indexed, "threadbus_files_indexed_total", outcome="failed") == 1
    # A cell in the sandbox: a kernel lives for the thread afterwards.
    thread = client.beta.threads.create()
    done = run_code(client, model, code_assistant(client), thread.id, "print(6 * 7)",
                    answer_on="42")  # fmt: skip
    assert done.run.status == "completed"
    ran = scrape(system, "tool_executor")
    assert moved(executor, ran, "threadbus_tool_call_duration_seconds_count",
                 tool="code_interpreter", function="code_interpreter") == 1  # fmt: skip
    assert value(ran, "threadbus_sandbox_kernels") >= 1


def test_a_user_inventing_model_names_cannot_grow_the_series_without_end(
    client: OpenAI, system: System
) -> None:
    """Model names come from users: past 50 distinct names per process, the rest count as
    `other`."""
    thread = client.beta.threads.create()
    assistant = client.beta.assistants.create(model="gpt-4o")
    pollers = sum(1 for p in system.services.values() if p.name == "run_poller" and p.alive)

    def models() -> set[str | None]:
        found = scrape(system, "run_poller")
        return {dict(labels).get("model") for n, labels in found
                if n == "threadbus_model_request_duration_seconds_count"}  # fmt: skip

    for i in range(50 * pollers + 30):
        if i >= 50 and "other" in models():
            break
        client.beta.threads.messages.create(thread.id, role="user", content=f"name {i}")
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, model=f"invented-{i}",
            poll_interval_ms=20,
        )  # fmt: skip
        assert run.status == "completed"
    seen = models()
    assert "other" in seen
    assert len(seen - {"other"}) <= 50 * pollers
