"""User story: another backend converses with an assistant over Kafka only."""

import json
import subprocess
import sys
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from openai import OpenAI

from tests.e2e.test_function_tools import function_tool
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap, user_message
from tests.system import HEADERS, System, wait_until

RUN_EVENTS = ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
              "thread.run.completed"]  # fmt: skip


def new_thread_id() -> str:
    return f"thread_{uuid.uuid4().hex}"


def types(events: list[dict[str, object]]) -> list[object]:
    return [e["type"] for e in events]


@pytest.fixture
def tutor(client: OpenAI) -> str:
    return client.beta.assistants.create(name="Math Tutor", model="gpt-4o").id


def test_conversation_over_kafka(
    tap: KafkaTap, tutor: str, model: ScriptedModelServer, client: OpenAI, system: System
) -> None:
    model.script("3x + 11 = 14", reply="x = 1.")
    model.script("explain", reply="Subtract 11, then divide by 3.")
    thread_id = new_thread_id()
    first = user_message(thread_id, tutor, "I need to solve the equation `3x + 11 = 14`.")
    tap.publish(first, key=thread_id)

    def completed(n: int) -> list[dict[str, object]]:
        done = [e for e in tap.events(thread_id) if e["type"] == "thread.message.completed"]
        return done if len(done) >= n else []

    reply = wait_until(lambda: completed(1))[0]
    assert reply["data"]["content"][0]["text"]["value"] == "x = 1."  # type: ignore[index]
    assert reply["causationid"] == first["id"]
    events = tap.events(thread_id)
    assert types(events)[:2] == ["thread.created", "thread.message.created"]
    assert [
        t for t in types(events) if str(t).startswith("thread.run.") and ".step." not in str(t)
    ] == RUN_EVENTS
    assert all(e["causationid"] == first["id"] for e in events)
    assert all(e["specversion"] == "1.0" and e["id"].startswith("evt_") for e in events)  # type: ignore[union-attr]
    # The claim writes in_progress itself (its envelope built by Postgres): the same as the rest.
    queued, started = (next(e for e in events if e["type"] == f"thread.run.{s}")
                       for s in ("queued", "in_progress"))  # fmt: skip
    same = ("subject", "source", "datacontenttype", "causationid", "runid", "specversion")
    assert started["runid"] == started["data"]["id"]  # type: ignore[index]
    assert {k: started[k] for k in same} == {k: queued[k] for k in same}
    assert set(started) == set(queued)
    assert started["id"] != queued["id"]
    times = [datetime.fromisoformat(str(e["time"])) for e in (queued, started)]
    assert times == sorted(times)

    second = user_message(thread_id, tutor, "Could you explain this to me?")
    tap.publish(second, key=thread_id)
    reply = wait_until(lambda: completed(2))[1]
    assert reply["data"]["content"][0]["text"]["value"] == "Subtract 11, then divide by 3."  # type: ignore[index]
    assert reply["causationid"] == second["id"]

    # The same conversation is visible through the HTTP API, in order.
    listed = client.beta.threads.messages.list(thread_id=thread_id, order="asc")
    assert [m.role for m in listed.data] == ["user", "assistant", "user", "assistant"]

    # And the archiver kept it: `threadbus export` prints the transcript as JSONL.
    def exported() -> list[dict[str, object]]:
        out = subprocess.run(
            [sys.executable, "-m", "services.core.cli", "export", thread_id],
            env=system.env | {"THREADBUS_DATABASE_URL": system.infra.database_url},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        return lines if len(lines) == 4 else []

    transcript = wait_until(exported, timeout=30, interval=0.5)
    assert [(m["role"], m["text"]) for m in transcript] == [
        ("user", "I need to solve the equation `3x + 11 = 14`."),
        ("assistant", "x = 1."),
        ("user", "Could you explain this to me?"),
        ("assistant", "Subtract 11, then divide by 3."),
    ]


def test_a_run_queued_over_kafka_is_announced_as_the_api_shows_it(
    tap: KafkaTap, tutor: str, model: ScriptedModelServer, system: System
) -> None:
    """The intake's run events show the run as the API renders it, number types included, in
    the intake's order, with the envelope of the event that queued it."""
    model.script("announce the run", reply="Announced.")
    thread_id = new_thread_id()
    options = {
        "model": "gpt-4o-mini", "instructions": "Ünïcode \"quoted\"", "temperature": 1,
        "top_p": 0.35, "max_completion_tokens": 300, "parallel_tool_calls": False,
        "metadata": {"k": "v"}, "tools": [{"type": "code_interpreter"}],
        "truncation_strategy": {"type": "last_messages", "last_messages": 2},
        "response_format": {"type": "json_object"},
    }  # fmt: skip
    event = user_message(thread_id, tutor, "announce the run", run=options)
    tap.publish(event, key=thread_id)

    def announced(kind: str) -> list[dict[str, Any]]:
        return [e for e in tap.events(thread_id) if e["type"] == f"thread.run.{kind}"]

    wait_until(lambda: announced("completed"))
    created, queued = announced("created")[0], announced("queued")[0]
    assert types(tap.events(thread_id))[:4] == [
        "thread.created", "thread.message.created", "thread.run.created", "thread.run.queued"
    ]  # fmt: skip
    run_id = queued["data"]["id"]
    assert created["data"] == queued["data"]
    assert created["id"] != queued["id"]
    same = ("subject", "source", "datacontenttype", "causationid", "runid", "specversion")
    assert {k: queued[k] for k in same} == {
        "subject": thread_id, "source": "threadbus", "datacontenttype": "application/json",
        "causationid": event["id"], "runid": run_id, "specversion": "1.0",
    }  # fmt: skip
    url = f"{system.api_url}/threads/{thread_id}/runs/{run_id}"
    shown = httpx.get(url, headers=HEADERS, timeout=30).json()
    moved = {"status", "started_at", "completed_at", "expires_at", "usage"}
    assert set(queued["data"]) == set(shown)
    assert queued["data"]["status"] == "queued"
    assert queued["data"]["expires_at"] > queued["data"]["created_at"]
    # json.dumps tells 1 from 1.0: the numbers must be written as the API writes them
    assert json.dumps({k: v for k, v in queued["data"].items() if k not in moved},
                      sort_keys=True) == json.dumps(
        {k: v for k, v in shown.items() if k not in moved}, sort_keys=True)  # fmt: skip
    assert shown["temperature"] == 1.0


def test_duplicate_event_gives_one_message_and_one_run(
    tap: KafkaTap, tutor: str, client: OpenAI
) -> None:
    thread_id = new_thread_id()
    event = user_message(thread_id, tutor, "Only once, please.")
    tap.publish(event, key=thread_id)
    tap.publish(event, key=thread_id)
    wait_until(lambda: [e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"])
    tap.publish(event, key=thread_id)  # a late redelivery, after the run finished
    marker = user_message(thread_id, tutor, "marker")
    tap.publish(marker, key=thread_id)
    wait_until(
        lambda: len([e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"]) == 2
    )

    runs = client.beta.threads.runs.list(thread_id=thread_id)
    assert len(runs.data) == 2
    texts = [m.content[0].text.value for m in  # type: ignore[union-attr]
             client.beta.threads.messages.list(thread_id=thread_id, order="asc").data]  # fmt: skip
    assert texts == ["Only once, please.", "Echo: Only once, please.", "marker", "Echo: marker"]


def test_the_same_id_from_two_sources_is_two_events(
    tap: KafkaTap, tutor: str, client: OpenAI
) -> None:
    """CloudEvents identity is `source` and `id` together: two producers that both number
    their events from 1 are both heard, and each one's redelivery is still dropped."""
    thread_id = new_thread_id()
    shared_id = f"event-{uuid.uuid4().hex}"
    billing = {**user_message(thread_id, tutor, "from billing"), "id": shared_id,
               "source": "billing"}  # fmt: skip
    support = {**user_message(thread_id, tutor, "from support"), "id": shared_id,
               "source": "support"}  # fmt: skip
    tap.publish(billing, key=thread_id)
    wait_until(lambda: [e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"])
    tap.publish(support, key=thread_id)
    tap.publish(billing, key=thread_id)  # a redelivery: same source, same id
    wait_until(
        lambda: len([e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"]) == 2
    )
    marker = user_message(thread_id, tutor, "marker")
    tap.publish(marker, key=thread_id)
    wait_until(
        lambda: len([e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"]) == 3
    )
    texts = [m.content[0].text.value for m in  # type: ignore[union-attr]
             client.beta.threads.messages.list(thread_id=thread_id, order="asc").data]  # fmt: skip
    assert texts == ["from billing", "Echo: from billing", "from support", "Echo: from support",
                     "marker", "Echo: marker"]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"{not json", "not JSON"),
        (
            json.dumps({"specversion": "1.0", "id": "x", "source": "t", "type": "nope"}).encode(),
            "not a valid Threadbus inbound event",
        ),
        ("missing-content", "data.content"),
        ("bad-thread-id", "subject"),
        ("unknown-assistant", "No assistant found with id 'asst_nope'"),
    ],
)
def test_bad_events_land_on_the_dlq_with_a_reason(
    tap: KafkaTap, tutor: str, record: bytes | str, reason: str
) -> None:
    thread_id = new_thread_id()
    if record == "missing-content":
        event = user_message(thread_id, tutor, "x")
        del event["data"]["content"]
        record = json.dumps(event).encode()
    elif record == "bad-thread-id":
        record = json.dumps(user_message("not a thread id", tutor, "x")).encode()
    elif record == "unknown-assistant":
        record = json.dumps(user_message(thread_id, "asst_nope", "x")).encode()
    assert isinstance(record, bytes)
    tap.publish(record, key=thread_id)

    letter = wait_until(lambda: [d for d in tap.dead_letters() if d["value"] == record.decode()])[0]
    assert reason in letter["reason"]
    assert letter["topic"] == "threadbus.inbound"
    assert letter["offset"] is not None
    error = wait_until(
        lambda: [
            e
            for e in tap.events()
            if e["type"] == "error"
            and e["subject"] == letter["key"]
            and e["data"]["error"]["message"] == letter["reason"]
        ]
    )[0]
    assert error["data"]["event_id"] == letter["event_id"]

    # The consumer kept going: a good event right after is answered.
    good = user_message(thread_id, tutor, "still there?")
    tap.publish(good, key=thread_id)
    wait_until(lambda: [e for e in tap.events(thread_id) if e["type"] == "thread.run.completed"])


async def test_unknown_assistant_leaves_no_thread_behind(tap: KafkaTap, system: System) -> None:
    thread_id = new_thread_id()
    tap.publish(user_message(thread_id, "asst_missing", "hello"), key=thread_id)
    wait_until(lambda: [d for d in tap.dead_letters() if thread_id in d["value"]])
    conn = await asyncpg.connect(system.infra.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM threads WHERE id = $1", thread_id) == 0
    finally:
        await conn.close()


def test_message_during_an_active_run_is_folded_into_the_next_run(
    tap: KafkaTap, tutor: str, model: ScriptedModelServer, client: OpenAI
) -> None:
    model.script("slow question", reply="slow answer", delay_s=2)
    thread_id = new_thread_id()
    tap.publish(user_message(thread_id, tutor, "slow question"), key=thread_id)
    model.wait_for_request("slow question", timeout=30)
    tap.publish(user_message(thread_id, tutor, "and another thing"), key=thread_id)
    wait_until(lambda: len([e for e in tap.events(thread_id)
                            if e["type"] == "thread.run.completed"]) == 2)  # fmt: skip
    runs = client.beta.threads.runs.list(thread_id=thread_id)
    assert [r.status for r in runs.data] == ["completed", "completed"]
    texts = [m.content[0].text.value for m in  # type: ignore[union-attr]
             client.beta.threads.messages.list(thread_id=thread_id, order="asc").data]  # fmt: skip
    assert texts[-1] == "Echo: and another thing"
    assert "slow answer" in texts


def test_cancel_run_event(
    tap: KafkaTap, tutor: str, model: ScriptedModelServer, client: OpenAI
) -> None:
    model.script("cancel me over kafka", reply="never seen", delay_s=30)
    thread_id = new_thread_id()
    tap.publish(user_message(thread_id, tutor, "cancel me over kafka"), key=thread_id)
    model.wait_for_request("cancel me over kafka", timeout=30)
    run_id = wait_until(lambda: [e["data"]["id"] for e in tap.events(thread_id)
                                 if e["type"] == "thread.run.in_progress"])[0]  # fmt: skip
    order = {
        "specversion": "1.0", "id": f"cancel-{uuid.uuid4().hex}", "source": "tests",
        "type": "threadbus.cancel_run", "subject": thread_id, "data": {"run_id": run_id},
    }  # fmt: skip
    tap.publish(order, key=thread_id)
    cancelled = wait_until(
        lambda: [e for e in tap.events(thread_id) if e["type"] == "thread.run.cancelled"],
        timeout=30,
    )[0]
    kinds = types(tap.events(thread_id))
    assert kinds.index("thread.run.cancelling") < kinds.index("thread.run.cancelled")
    assert cancelled["data"]["cancelled_at"] is not None
    assert "thread.message.completed" not in kinds
    assert client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status == "cancelled"


SQL_LOOKING = "it's '' \\' \\\\ \\x41 $$ $q$ E'\\n' '); DELETE FROM outbox; -- ünï 𝄞 🙂\n\t\"x\""


def test_text_that_looks_like_sql_comes_out_exactly(tap: KafkaTap, tutor: str) -> None:
    """Quotes, backslashes, dollar quotes and non-BMP characters come back exactly in the
    events, whatever way the outbox rows take to Postgres and the broker."""
    thread_id = new_thread_id()
    tap.publish(user_message(thread_id, tutor, SQL_LOOKING), key=thread_id)
    done = wait_until(
        lambda: [e for e in tap.events(thread_id) if e["type"] == "thread.message.completed"]
    )
    assert done[0]["data"]["content"][0]["text"]["value"] == "Echo: " + SQL_LOOKING  # type: ignore[index]
    asked = next(e for e in tap.events(thread_id) if e["type"] == "thread.message.created")
    assert asked["data"]["content"][0]["text"]["value"] == SQL_LOOKING  # type: ignore[index]

    # A record that is refused keeps its key exactly, on the DLQ and in its `error` event.
    key = "key " + SQL_LOOKING
    tap.publish(b"not json", key=key)
    letter = wait_until(lambda: [d for d in tap.dead_letters() if d["key"] == key])[0]
    assert letter["value"] == "not json"
    wait_until(lambda: [e for e in tap.events() if e["type"] == "error" and e["subject"] == key])


REPLY_END = ["thread.run.step.created", "thread.run.step.in_progress", "thread.message.created",
             "thread.message.in_progress", "thread.message.delta", "thread.message.completed",
             "thread.run.step.completed", "thread.run.completed"]  # fmt: skip


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text: 1 and 1.0 told apart."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


RICH = {
    "tools": [function_tool("lookup")],
    "metadata": {"k": "v", "e": ""}, "temperature": 1, "top_p": 0.35,
    "response_format": {"type": "json_object"}, "parallel_tool_calls": False,
    "truncation_strategy": {"type": "last_messages", "last_messages": 3},
    "tool_choice": "none", "instructions": 'Ünïcode "quoted"',
}  # fmt: skip
"""Run options whose JSON columns the run's rendering by Postgres must get right."""


@pytest.mark.parametrize(
    ("options", "text"),
    [(RICH, 'Ünïcode-"end"\n'), ({"tools": []}, ""),
     ({**RICH, "tools": [{"type": "file_search"}]}, 'Ünïcode-"end"\n')],
    ids=["plain", "empty", "file_search"],
)  # fmt: skip
def test_a_turns_end_announces_the_reply_and_the_run_as_the_api_shows_them(
    tap: KafkaTap, tutor: str, model: ScriptedModelServer, system: System,
    options: dict[str, Any], text: str,
) -> None:  # fmt: skip
    """A plain turn (no tools its reply needs a query for, a fast model) ends in one statement
    whose events Postgres renders from the rows it writes, with one clock reading for all;
    offering file_search takes the transaction path, where Python builds each event with its
    own. Either way each event is the object the API reads, as opened for the opening ones,
    and carries the envelope of the event that queued the run; an empty reply has no delta.
    The reply is one chunk, so a reply opened while the model answered (timing: then the
    transaction path ends it) has the same events."""
    offers_search = options["tools"] == [{"type": "file_search"}]
    asked = f"announce the end {uuid.uuid4().hex}"
    model.script(asked, reply=text)
    threads = [new_thread_id() for _ in range(1 if offers_search else 5)]
    for thread_id in threads:
        tap.publish(user_message(thread_id, tutor, asked, run=options), key=thread_id)
    expected = [t for t in REPLY_END if text or t != "thread.message.delta"]
    single_clock = []
    for thread_id in threads:
        wait_until(lambda t=thread_id: types(tap.events(t))[-1:] == ["thread.run.completed"])
        events = tap.events(thread_id)
        queued = next(e for e in events if e["type"] == "thread.run.queued")
        end = events[types(events).index("thread.run.in_progress") + 1 :]
        assert types(end) == expected
        single_clock.append(len({e["time"] for e in end}) == 1)
        same = ("subject", "source", "datacontenttype", "causationid", "runid", "specversion")
        assert all({k: e[k] for k in same} == {k: queued[k] for k in same} for e in end)
        assert all(set(e) == set(queued) for e in end)
        assert len({e["id"] for e in events}) == len(events)

        data = {e["type"]: e["data"] for e in end}
        run_id, message = queued["data"]["id"], data["thread.message.completed"]
        step = data["thread.run.step.completed"]
        base = f"{system.api_url}/threads/{thread_id}"
        shown = {path: httpx.get(f"{base}/{path}", headers=HEADERS, timeout=30).json()
                 for path in (f"runs/{run_id}", f"messages/{message['id']}",
                              f"runs/{run_id}/steps/{step['id']}")}  # fmt: skip
        assert same_json(data["thread.run.completed"], shown[f"runs/{run_id}"])
        assert same_json(message, shown[f"messages/{message['id']}"])
        assert same_json(step, shown[f"runs/{run_id}/steps/{step['id']}"])
        assert data["thread.run.completed"]["metadata"] == options.get("metadata", {})
        assert message["content"] == [{"type": "text", "text": {"value": text, "annotations": []}}]
        assert step["step_details"]["message_creation"]["message_id"] == message["id"]
        assert step["usage"] == data["thread.run.completed"]["usage"]
        opened = {"status": "in_progress", "completed_at": None, "usage": None}
        for kind in ("created", "in_progress"):
            assert same_json(data[f"thread.run.step.{kind}"], {**step, **opened})
            assert same_json(data[f"thread.message.{kind}"], {
                **message, "status": "in_progress", "completed_at": None, "incomplete_at": None,
                "incomplete_details": None, "content": [],
            })  # fmt: skip
        if text:
            assert same_json(data["thread.message.delta"], {
                "id": message["id"], "object": "thread.message.delta",
                "delta": {"content": [{"index": 0, "type": "text", "text": {"value": text}}]},
            })  # fmt: skip
    if offers_search:
        assert single_clock == [False]  # each event its own clock reading: Python built them
    else:
        assert any(single_clock)  # the one statement (a reply opened while the model answered
        # takes the transaction path: it is timing, so one of five threads must do)
