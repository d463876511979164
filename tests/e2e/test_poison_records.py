"""Records a consumer cannot handle go to `threadbus.dlq`; the partition behind them moves on."""

import asyncio
import json
import time
import uuid

import asyncpg
from openai import OpenAI

from schemas import topics
from tests.e2e.test_function_tools import call, function_tool, wait_for_handlers
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap, user_message
from tests.system import System, wait_until

CONSUMERS = {
    topics.RUNS: topics.GROUP_RUN_POLLER,
    topics.TOOL_CALLS: topics.GROUP_TOOL_EXECUTOR,
    topics.TOOL_RESULTS: topics.GROUP_RUN_POLLER_RESULTS,
    topics.INGEST: topics.GROUP_FILE_INDEXER,
    topics.EVENTS: topics.GROUP_MESSAGE_ARCHIVER,
}
POISON = [
    b"not json at all",
    b"[" * 100_000,  # nested too deep for any parser
    b'{"unexpected": true}',  # JSON, but not what the topic carries
]


async def test_records_that_do_not_decode_are_dead_lettered_and_the_thread_goes_on(
    tap: KafkaTap, client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    await wait_for_handlers(system, "lookup_weather")
    thread_id = f"thread_{uuid.uuid4().hex}"
    for topic in CONSUMERS:
        for value in POISON:
            tap.publish(value, key=thread_id, topic=topic)
    letters = wait_until(
        lambda: len(mine := [d for d in tap.dead_letters() if d["key"] == thread_id]) >= 15 and mine
    )
    assert len(letters) == 15
    for topic, consumer in CONSUMERS.items():
        theirs = [d for d in letters if d["topic"] == topic]
        assert {d["consumer"] for d in theirs} == {consumer}
        reasons = sorted(d["reason"] for d in theirs)
        assert [r.startswith("not JSON") for r in reasons] == [True, True, False], reasons
        assert reasons[2].startswith("not a valid"), reasons
        assert all(d["attempts"] == 1 for d in theirs)
    # The same partitions carry the thread's whole run: inbound, a wake-up, a server-side
    # call and its result, and the events.
    model.script("poisoned thread", tool_calls=[call("lookup_weather", city="Oslo")])
    model.script("sunny in Oslo", reply="It is sunny in Oslo.")
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[function_tool("lookup_weather")]
    )  # type: ignore[misc]
    tap.publish(user_message(thread_id, assistant.id, "poisoned thread"), key=thread_id)
    done = wait_until(
        lambda: [e for e in tap.events(thread_id) if e.get("type") == "thread.message.completed"]
    )
    assert done[0]["data"]["content"][0]["text"]["value"] == "It is sunny in Oslo."


async def test_a_record_whose_handler_keeps_failing_is_dead_lettered_after_its_budget(
    tap: KafkaTap, system: System
) -> None:
    thread_id = f"thread_{uuid.uuid4().hex}"
    # Decodes as an event, but Postgres refuses its subject (a number) on every attempt.
    bad = {"id": f"evt_{uuid.uuid4().hex}", "type": "thread.created", "subject": 42, "data": {}}
    good = {"id": f"evt_{uuid.uuid4().hex}", "type": "thread.created", "subject": thread_id,
            "data": {"id": thread_id}}  # fmt: skip
    started = time.monotonic()
    tap.publish(bad, key=thread_id, topic=topics.EVENTS)
    tap.publish(good, key=thread_id, topic=topics.EVENTS)
    letter = wait_until(lambda: [d for d in tap.dead_letters() if d["event_id"] == bad["id"]])[0]
    assert letter["consumer"] == topics.GROUP_MESSAGE_ARCHIVER
    assert letter["attempts"] == 5
    assert letter["reason"].startswith("the handler failed: DataError")
    assert json.loads(letter["value"]) == bad
    conn = await asyncpg.connect(system.infra.database_url)
    try:
        archived = 0
        for _ in range(100):
            archived = await conn.fetchval(
                "SELECT count(*) FROM archive WHERE event_id = $1", good["id"]
            )
            if archived:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert archived == 1, "the event behind the failing one was not archived"
    # Five attempts with pauses of 0.25, 0.5, 1 and 2 s: blocked for seconds, not forever.
    assert time.monotonic() - started < 20
