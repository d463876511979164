"""A run is one trace, across HTTP, Kafka record headers and the model call, as exported over
OTLP to a collector (`tests/fakes/collector.py`)."""

import asyncio
import secrets
from collections import Counter

import pytest
from openai import OpenAI
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

from schemas import topics
from services.core import outbox
from tests.e2e.test_function_tools import call, function_tool, wait_for_handlers
from tests.e2e.test_kafka_front_door import new_thread_id
from tests.fakes.collector import Collector, Span
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap, user_message
from tests.system import System, wait_until


def _caller() -> tuple[str, str, str]:
    """A trace id, a span id of the caller, and the `traceparent` naming them."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def exported(
    collector: Collector, trace_id: str, expected: dict[tuple[str, str], int]
) -> list[Span]:
    """The trace's spans once at least `expected` of each (service, name) arrived: each
    process exports on its own schedule (every 200 ms here), so one may arrive after another
    that ended later."""
    wanted = Counter(expected)

    def arrived() -> list[Span] | None:
        spans = collector.spans(trace_id)
        seen = Counter((s.service, s.name) for s in spans)
        return spans if not wanted - seen else None

    def missing() -> str:
        seen = Counter((s.service, s.name) for s in collector.spans(trace_id))
        return f"missing {wanted - seen}; exported {seen}"

    return wait_until(arrived, timeout=30, explain=missing)  # type: ignore[no-any-return]


def _connected(spans: list[Span], caller: str) -> None:
    """Every span's parent is a span of the trace, or the caller's: one tree, no orphan."""
    ids = {s.span_id for s in spans} | {caller}
    orphans = [(s.service, s.name) for s in spans if s.parent_id not in ids]
    assert not orphans, orphans


def test_a_run_with_a_server_side_function_is_one_trace_through_every_service_it_crosses(
    client: OpenAI, model: ScriptedModelServer, system: System, collector: Collector
) -> None:
    asyncio.run(wait_for_handlers(system, "lookup_weather"))
    model.script("traced weather", tool_calls=[call("lookup_weather", city="Bergen")])
    model.script("sunny in Bergen", reply="Sunny, for once.")
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[function_tool("lookup_weather")]
    )  # type: ignore[misc]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "traced weather"}])
    trace_id, caller, traceparent = _caller()
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, extra_headers={"traceparent": traceparent}
    )
    done = wait_until(lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id))
                      .status in ("completed", "failed") and r)  # fmt: skip
    assert done.status == "completed"

    # The request (the API), both turns and their model calls (the run-poller), the call
    # record and the function (the tool-executor), and the result record (the run-poller).
    # Each process exports on its own schedule, so wait for all of them.
    spans = exported(collector, trace_id, {
        ("threadbus-api", "POST /v1/threads/{thread_id}/runs"): 1,
        ("threadbus-run-poller", "run turn"): 2,
        ("threadbus-run-poller", "chat gpt-4o"): 2,
        ("threadbus-run-poller", "threadbus.tool_results process"): 1,
        ("threadbus-tool-executor", "threadbus.tool_calls process"): 1,
        ("threadbus-tool-executor", "tool function lookup_weather"): 1,
    })  # fmt: skip
    seen = Counter((s.service, s.name) for s in spans)
    assert seen[("threadbus-run-poller", "run turn")] == 2  # no third turn
    _connected(spans, caller)
    server = next(s for s in spans if s.service == "threadbus-api" and "/runs" in s.name)
    assert server.parent_id == caller
    assert server.kind == SpanMessage.SPAN_KIND_SERVER
    turns = [s for s in spans if s.name == "run turn"]
    assert all(t.attributes["threadbus.run_id"] == run.id for t in turns)
    # Each turn continues the run's trace from the request that created it.
    assert all(t.parent_id == server.span_id for t in turns)
    # The tool-executor's span is a child of the run-poller's: the record carried it.
    executed = next(s for s in spans if s.name == "threadbus.tool_calls process")
    assert executed.parent_id in {t.span_id for t in turns}
    # The model was asked with the model span's own context.
    chats = {s.span_id: s for s in spans if s.name == "chat gpt-4o"}
    sent = [t for t in model.traceparents if t is not None and t.split("-")[1] == trace_id]
    assert len(sent) == 2
    assert {t.split("-")[2] for t in sent} == set(chats)
    assert all(c.attributes["gen_ai.usage.output_tokens"] > 0 for c in chats.values())


def test_an_inbound_event_continues_the_trace_its_producer_sent(
    tap: KafkaTap, client: OpenAI, model: ScriptedModelServer, collector: Collector
) -> None:
    model.script("traced over kafka", reply="Heard you.")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread_id = new_thread_id()
    trace_id, caller, traceparent = _caller()
    event = user_message(thread_id, assistant.id, "traced over kafka")
    tap.publish(event, key=thread_id, headers={"traceparent": traceparent})
    wait_until(lambda: [e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"])

    spans = exported(collector, trace_id, {
        ("threadbus-run-starter", "threadbus.inbound process"): 1,
        ("threadbus-run-poller", "run turn"): 1,
        ("threadbus-run-poller", "chat gpt-4o"): 1,
    })  # fmt: skip
    intake = next(s for s in spans if s.service == "threadbus-run-starter")
    assert intake.name == "threadbus.inbound process"
    assert intake.parent_id == caller
    turn = next(s for s in spans if s.name == "run turn")
    assert turn.service == "threadbus-run-poller"
    assert turn.parent_id == intake.span_id
    # The archiver takes events in batches: its span links to the trace of each event.
    archived = wait_until(lambda: [s for s in collector.spans()
                                   if s.service == "threadbus-message-archiver"
                                   and trace_id in s.links], timeout=20)  # fmt: skip
    assert archived[0].name == "threadbus.events process"


@pytest.mark.usefixtures("system")  # the archiver runs
def test_an_archived_batch_links_every_trace_it_carries(
    tap: KafkaTap, collector: Collector
) -> None:
    # More events at once than a span kept links by default (128), each of its own trace,
    # on one thread (one partition), so the archiver takes them in one or two batches.
    thread_id = new_thread_id()
    callers = [_caller() for _ in range(300)]
    tap.publish_many([
        (outbox.event("thread.message.delta", thread_id,
                      {"id": f"msg_{n}", "object": "thread.message.delta", "delta": {}}, None),
         thread_id, {"traceparent": traceparent})
        for n, (_, _, traceparent) in enumerate(callers)
    ], topic=topics.EVENTS)  # fmt: skip
    wanted = {trace_id for trace_id, _, _ in callers}

    def linked() -> list[Span]:
        return [s for s in collector.spans() if s.service == "threadbus-message-archiver"
                and wanted & set(s.links)]  # fmt: skip

    def all_linked() -> bool:
        return wanted <= {link for span in linked() for link in span.links}

    def unlinked() -> str:
        seen = {link for span in linked() for link in span.links}
        return f"{len(wanted - seen)} of 300 traces not linked"

    wait_until(all_linked, timeout=20, explain=unlinked)
    # The case the test is for happened: a batch carried more than 128 of them.
    assert max(len(wanted & set(span.links)) for span in linked()) > 128
