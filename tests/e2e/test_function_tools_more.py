"""Function tools: expiry, a round trip driven only by Kafka, executors that scale, redelivery."""

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from openai.types.beta import Assistant, Thread
from openai.types.beta.threads import Run

from schemas import topics
from schemas.events import ToolCallResult
from services.core.embedded import free_port
from tests.e2e.test_function_tools import call, function_tool, wait_for_handlers
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap, user_message
from tests.system import System, partition_of, wait_until


@pytest.mark.slow
def test_a_run_left_in_requires_action_expires(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    port = free_port()
    short = system.spawn("api", label="api-short-expiry", THREADBUS_API_PORT=str(port),
                         THREADBUS_RUN_EXPIRES_SECONDS="6")  # fmt: skip
    try:
        impatient = client.with_options(base_url=f"http://127.0.0.1:{port}/v1")
        wait_until(lambda: _answers(impatient), timeout=30)
        model.script("expire me", tool_calls=[call("get_weather", city="Nowhere")])
        assistant, thread, run = _asking_for_weather(impatient, "expire me")
        assert run.expires_at is not None
        assert run.expires_at - run.created_at == 6
        expired = wait_until(
            lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status
            == "expired" and r, timeout=30,
        )  # fmt: skip
        assert expired.expires_at is None
        assert expired.required_action is None
        assert time.time() >= run.expires_at
        step = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data[0]
        assert step.status == "expired"
        assert step.expired_at is not None
        with pytest.raises(openai.BadRequestError, match="expired"):
            client.beta.threads.runs.submit_tool_outputs(
                thread_id=thread.id, run_id=run.id,
                tool_outputs=[{"tool_call_id": step.step_details.tool_calls[0].id, "output": "x"}],  # type: ignore[union-attr]
            )  # fmt: skip
        # The thread is free again.
        again = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        assert again.status == "queued"
    finally:
        short.stop()


def _asking_for_weather(api: OpenAI, content: str) -> tuple[Assistant, Thread, Run]:
    """An assistant with `get_weather`, a thread asking `content`, and its run, polled until
    it stops; the model must be scripted to call the function."""
    assistant = api.beta.assistants.create(
        model="gpt-4o",
        tools=[function_tool("get_weather")],  # type: ignore[list-item]
    )
    thread = api.beta.threads.create(messages=[{"role": "user", "content": content}])
    run = api.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "requires_action"
    return assistant, thread, run


def _answers(client: OpenAI) -> bool:
    try:
        client.beta.assistants.list(limit=1)
    except openai.APIConnectionError:
        return False
    return True


def test_function_round_trip_over_kafka_only(
    tap: KafkaTap, model: ScriptedModelServer, client: OpenAI
) -> None:
    model.script("kafka quiz", tool_calls=[call("display_quiz", title="Q")])
    model.script("kafka answers", reply="Thanks for answering over Kafka.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("display_quiz")])  # type: ignore[list-item]
    thread_id = f"thread_{uuid.uuid4().hex}"
    tap.publish(user_message(thread_id, assistant.id, "kafka quiz"), key=thread_id)

    action = wait_until(lambda: [e for e in tap.events(thread_id)
                                 if e["type"] == "thread.run.requires_action"])[0]  # fmt: skip
    run = action["data"]
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["display_quiz"]
    kinds = [e["type"] for e in tap.events(thread_id)]
    assert "thread.run.step.created" in kinds
    created = [e for e in tap.events(thread_id) if e["type"] == "thread.run.step.created"][-1]
    assert created["data"]["type"] == "tool_calls"

    answer = {
        "specversion": "1.0", "id": f"answer-{uuid.uuid4().hex}", "source": "tests",
        "type": "threadbus.submit_tool_outputs", "subject": thread_id,
        "data": {"run_id": run["id"],
                 "tool_outputs": [{"tool_call_id": calls[0]["id"], "output": "kafka answers"}]},
    }  # fmt: skip
    tap.publish(answer, key=thread_id)
    done = wait_until(lambda: [e for e in tap.events(thread_id)
                               if e["type"] == "thread.run.completed"])[0]  # fmt: skip
    assert done["data"]["id"] == run["id"]
    step_done = [e for e in tap.events(thread_id) if e["type"] == "thread.run.step.completed"]
    assert (
        step_done[0]["data"]["step_details"]["tool_calls"][0]["function"]["output"]
        == "kafka answers"
    )
    assert step_done[0]["causationid"] == answer["id"]
    reply = [e for e in tap.events(thread_id) if e["type"] == "thread.message.completed"][-1]
    assert reply["data"]["content"][0]["text"]["value"] == "Thanks for answering over Kafka."

    # Submitting again is refused on the DLQ, with the API's message.
    tap.publish({**answer, "id": f"again-{uuid.uuid4().hex}"}, key=thread_id)
    letter = wait_until(lambda: [d for d in tap.dead_letters() if run["id"] in d["value"]])[0]
    assert letter["reason"] == 'Runs in status "completed" do not accept tool outputs.'


@pytest.mark.slow
async def test_two_executors_share_the_calls_and_each_runs_once(
    client: OpenAI, model: ScriptedModelServer, system: System, workdir: Path
) -> None:
    second = system.spawn("tool_executor", label="tool-executor-2")
    try:
        executors = ("tool_executor", "tool-executor-2")
        wait_until(lambda: _split(system, *executors), timeout=90,
                   explain=lambda: _who_held_what(system, *executors))  # fmt: skip
        # Joins are logged with their generation: what that explanation shows of a slow one.
        assert "Joined group 'tool-executor' (generation " in system.log("tool-executor-2")
        await wait_for_handlers(system, "slow_echo")
        assistant = client.beta.assistants.create(
            model="gpt-4o", tools=[function_tool("slow_echo")]
        )  # type: ignore[list-item]
        # Four threads on the partitions of each executor (a process may run several
        # consumers, so which threads reach which process is chosen, not left to chance).
        held = [_assignment(system.log(label)) for label in ("tool_executor", "tool-executor-2")]
        threads: list[list[str]] = [[], []]
        while min(len(t) for t in threads) < 4:
            thread_id = client.beta.threads.create().id
            for index, partitions in enumerate(held):
                if str(partition_of(thread_id)) in partitions and len(threads[index]) < 4:
                    threads[index].append(thread_id)
                    break  # a partition both logs name (a rebalance) must not get it twice
        runs = []
        for thread_id in threads[0] + threads[1]:
            marker = f"scale-{uuid.uuid4().hex[:8]}"
            model.script(marker, tool_calls=[call("slow_echo", text=f"part {j}", seconds=0.4)
                                             for j in range(2)])  # fmt: skip
            client.beta.threads.messages.create(thread_id, role="user", content=marker)
            runs.append(
                client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant.id)
            )
        for run in runs:
            final = client.beta.threads.runs.poll(
                run.id, thread_id=run.thread_id, poll_interval_ms=100
            )
            assert final.status == "completed"
        call_ids = []
        per_run: list[list[str]] = []
        for run in runs:
            step = client.beta.threads.runs.steps.list(
                run_id=run.id, thread_id=run.thread_id, order="asc"
            ).data[0]
            per_run.append([c.id for c in step.step_details.tool_calls])  # type: ignore[union-attr]
            call_ids += per_run[-1]
        log = [line.split() for line in (workdir / "calls.log").read_text().splitlines()]
        ran = Counter(call_id for call_id, _ in log if call_id in set(call_ids))
        assert sorted(ran) == sorted(call_ids)
        assert set(ran.values()) == {1}, "a call ran more than once"
        pids = {pid for call_id, pid in log if call_id in set(call_ids)}
        assert len(pids) == 2, "both executors should have done work"
        # One thread's calls ran in the order the model made them, on one executor.
        order = [call_id for call_id, _ in log]
        owner = dict(log)
        for earlier, later in per_run:
            assert order.index(earlier) < order.index(later)
            assert owner[earlier] == owner[later]
    finally:
        second.kill()


def _assignment(log: str) -> set[str]:
    """The partitions a process holds: the last assignment each of its consumers logged
    (since the process started: a restarted service appends to the same log)."""
    latest: dict[str, str] = {}
    for line in _since_start(log).splitlines():
        found = re.search(r"Consumer (\S+) assigned to partitions: (.*)", line)
        if found and ("threadbus.tool_calls" in line or found.group(2) == "()"):
            latest[found.group(1)] = found.group(2)
    return {p for held in latest.values() for p in re.findall(r"partition=(\d+)", held)}


def _since_start(log: str) -> str:
    """The part of a service's log written since its process last started (a restarted
    service appends to the same file)."""
    return log[max(log.rfind("FastStream app starting"), 0) :]


_MEMBERSHIP = ("partition assignments", "assigned to partitions", " aiokafka")
"""What a process logs about its consumers' group membership (FastStream's lines and aiokafka's)."""


def _who_held_what(system: System, *labels: str) -> str:
    """The assignments the processes logged last and what their Kafka clients said meanwhile
    (rebalances, commits refused for an old generation, requests timed out), with times."""
    logged = []
    for label in labels:
        lines = [line for line in _since_start(system.log(label)).splitlines()
                 if any(about in line for about in _MEMBERSHIP)]  # fmt: skip
        logged += [f"{label}: {line}" for line in lines[-200:]]  # seven failed rounds fit
    return "the processes did not split the partitions:\n" + "\n".join(logged)


def _split(system: System, *labels: str) -> bool:
    """Each consumer holds some partitions, and no partition is held twice."""
    held = [_assignment(system.log(label)) for label in labels]
    return all(held) and len(set().union(*held)) == sum(len(h) for h in held)


def test_a_result_delivered_twice_is_stored_once(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    """Results of one server-side call arrive three times on `threadbus.tool_results`: two
    published here while the handler still runs, then the executor's own. The first is kept."""
    asyncio.run(wait_for_handlers(system, "record_start"))
    model.script("twice please", tool_calls=[call("record_start", seconds=3)])
    model.script("one", reply="Got the first result.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("record_start")])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "twice please"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    started = "SELECT id FROM tool_calls WHERE run_id = $1 AND started_by IS NOT NULL"
    call_id = wait_until(lambda: system.sql(started, run.id))[0]["id"]
    for n, output in enumerate(("one", "two")):
        result = ToolCallResult(id=f"cmd_twice_{n}", run_id=run.id, thread_id=thread.id,
                                tool_call_id=call_id, output=output)  # fmt: skip
        tap.publish(json.loads(result.model_dump_json()), key=thread.id, topic=topics.TOOL_RESULTS)
    done = wait_until(lambda: (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id))
                      .status == "completed" and r, timeout=30)  # fmt: skip
    # The second result and the executor's own (its handler took 3 s) were both turned away.
    turned_away = f"result for {run.id}/{call_id} not stored"
    wait_until(lambda: system.log("run_poller").count(turned_away) >= 2, timeout=30)
    stored = system.sql("SELECT output FROM tool_calls WHERE id = $1", call_id)[0]["output"]
    assert stored == "one"
    reply = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert reply.content[0].text.value == "Got the first result."  # type: ignore[union-attr]
    assert done.status == "completed"


def test_a_later_run_shows_the_model_the_tool_turns_of_earlier_runs(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    model.script("weather please", tool_calls=[call("get_weather", city="Oslo")])
    model.script("sunny in Oslo", reply="It is sunny in Oslo.")
    assistant, thread, run = _asking_for_weather(client, "weather please")
    assert run.required_action is not None
    asked = run.required_action.submit_tool_outputs.tool_calls[0]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, poll_interval_ms=50,
        tool_outputs=[{"tool_call_id": asked.id, "output": "sunny in Oslo"}],
    )  # fmt: skip
    assert run.status == "completed"

    client.beta.threads.messages.create(thread.id, role="user", content="and tomorrow?")
    later = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert later.status == "completed"
    seen = model.requests[-1]["messages"]
    assert [m["role"] for m in seen[-5:]] == ["user", "assistant", "tool", "assistant", "user"]
    assert seen[-4]["tool_calls"][0]["id"] == asked.id
    assert seen[-3] == {"role": "tool", "tool_call_id": asked.id, "content": "sunny in Oslo"}
    assert seen[-2]["content"] == "It is sunny in Oslo."
