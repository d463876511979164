"""Faults and edges: a relay whose connection is killed, bad bytes inbound, resumes at the end."""

import time
import uuid

import asyncpg
import httpx
import pytest
from openai import OpenAI

from services.core.embedded import free_port
from services.core.relay import _RELAY_LOCK
from tests.e2e.test_streaming import BETA
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap, user_message
from tests.sse import read_all
from tests.system import API_KEY, System, answers, wait_until


async def test_the_relay_survives_its_connection_being_killed(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    model.script("after the kill", reply="Still here.")
    probe = system.api_url.removesuffix("/v1") + "/readyz"
    wait_until(lambda: answers(probe), timeout=60)  # every consumer has joined: a clean start
    conn = await asyncpg.connect(system.infra.database_url)
    try:
        # The active relay: the session holding the relay's advisory lock.
        active = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = 0 AND objid = $1 AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            _RELAY_LOCK,
        )
        assert active is not None, "no relay holds the lock"
        killed = await conn.fetch(
            "SELECT pid, pg_terminate_backend(pid) AS done FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            " AND (pid = $1 OR query ILIKE '%advisory_lock%' OR query ILIKE 'LISTEN%')",
            active,
        )
    finally:
        await conn.close()
    assert active in {row["pid"] for row in killed if row["done"]}, "the active relay survived"
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "after the kill"}])
    started = time.monotonic()
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    assert time.monotonic() - started < 15
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(probe)
        assert answer.status_code == 200, answer.text


def test_text_the_database_refuses_goes_to_the_dlq(tap: KafkaTap, client: OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread_id = f"thread_{uuid.uuid4().hex}"
    event = user_message(thread_id, assistant.id, "nul \u0000 inside")
    tap.publish(event, key=thread_id)
    letter = wait_until(lambda: [d for d in tap.dead_letters() if d["event_id"] == event["id"]])[0]
    # Refused at validation, before Postgres sees it, with the field named.
    assert "content contains the NUL character" in letter["reason"]
    good = user_message(thread_id, assistant.id, "clean text")
    tap.publish(good, key=thread_id)
    wait_until(lambda: [e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"])


def test_resuming_after_the_last_event_ends_at_once(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    model.script("resume at the end", reply="Done already.")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "resume at the end"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    url = f"{system.api_url}/threads/{thread.id}/runs/{run.id}/events"
    with httpx.stream("GET", url, headers=BETA, timeout=30) as response:
        whole = read_all(response)
    assert whole[-2].event == "thread.run.completed"
    started = time.monotonic()
    with httpx.stream(
        "GET", url, headers={**BETA, "Last-Event-ID": str(whole[-2].id)}, timeout=30
    ) as response:
        rest = read_all(response)
    assert [e.event for e in rest] == ["done"]
    assert time.monotonic() - started < 10


def test_updating_without_metadata_keeps_it(client: OpenAI, model: ScriptedModelServer) -> None:
    model.script("keep my metadata", reply="kept")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "keep my metadata"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, metadata={"k": "v"}
    )
    assert client.beta.threads.runs.update(run.id, thread_id=thread.id).metadata == {"k": "v"}
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    client.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"m": "1"})
    kept = client.beta.threads.messages.update(message.id, thread_id=thread.id)
    assert kept.metadata == {"m": "1"}


def test_a_model_that_keeps_streaming_cannot_hold_a_run_past_expires_at(
    model: ScriptedModelServer, system: System
) -> None:
    """The model streams for 30 s; runs of this API expire after 4 s. The run ends `expired`
    at its expiry, its reply `incomplete` with what was written, and the thread moves on."""
    port = free_port()
    api = system.spawn("api", label="api-short-runs", THREADBUS_API_PORT=str(port),
                       THREADBUS_RUN_EXPIRES_SECONDS="4")  # fmt: skip
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0)
        words = " ".join(f"w{i}" for i in range(300))
        model.script("stream for ever", reply=words, chunk_delay_s=0.1)
        assistant = client.beta.assistants.create(model="gpt-4o")
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": "stream for ever"}]
        )
        started = time.monotonic()
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=100)
        took = time.monotonic() - started
        assert final.status == "expired"
        assert took < 10, f"the run outlived its expiry by {took - 4:.1f} s"
        reply = client.beta.threads.messages.list(thread.id, run_id=run.id).data[0]
        assert reply.status == "incomplete"
        assert reply.incomplete_details is not None
        assert reply.incomplete_details.reason == "run_expired"
        assert reply.content[0].type == "text"
        assert reply.content[0].text.value.startswith("w0 w1")  # what was written is kept
        model.script("after expiry", reply="Back.")
        client.beta.threads.messages.create(thread.id, role="user", content="after expiry")
    finally:
        api.stop()


def relay_holder(system: System) -> str:
    """The `application_name` of the connection holding the relay's lock ('' when none)."""
    rows = system.sql(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        _RELAY_LOCK,
    )
    return str(rows[0]["application_name"]) if rows else ""


def relayed(tap: KafkaTap, client: OpenAI, text: str) -> None:
    """A thread created through the API has its events on `threadbus.events`."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    wait_until(lambda: any(e["type"] == "thread.message.created" for e in tap.events(thread.id)))


@pytest.mark.slow
def test_the_run_pollers_relay_leads_another_stands_in_while_it_is_down_and_hands_back(
    client: OpenAI, system: System, tap: KafkaTap
) -> None:
    first_choice = "threadbus run-poller-relay "
    # (a relay that failed, as in the kill above, stands back for 30 s before leading again)
    wait_until(lambda: relay_holder(system).startswith(first_choice), timeout=90)

    system.services["run_poller"].kill()
    stand_in = wait_until(
        lambda: (holder := relay_holder(system)) and not holder.startswith(first_choice) and holder,
        timeout=30,
    )
    pid = int(stand_in.split()[2])
    label = next((label for label, p in system.services.items()
                  if p.proc and p.proc.pid == pid), None)  # fmt: skip
    assert label is not None, f"the stand-in {stand_in!r} is none of the system's processes"
    logged = len(system.log(label))
    relayed(tap, client, "relayed while no run-poller runs")

    system.spawn("run_poller")
    wait_until(lambda: system.ready("run_poller"), timeout=90)
    wait_until(lambda: relay_holder(system).startswith(first_choice), timeout=30)
    relayed(tap, client, "relayed after the hand-back")
    assert "outbox relay: handing over to a first-choice relay" in system.log(label)[logged:]
