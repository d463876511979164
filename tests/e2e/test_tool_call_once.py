"""A server-side handler starts at most once per tool call while its executor lives."""

import asyncio
import json
import re
from pathlib import Path

from openai import OpenAI

from schemas import topics
from schemas.events import ExecuteToolCall
from tests.e2e.test_function_tools import call, function_tool, wait_for_handlers
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.system import System, partition_of, wait_until


def starts(workdir: Path, key: str) -> list[str]:
    log = workdir / "calls.log.starts"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith(f"{key} ")]


def test_a_call_delivered_again_while_it_runs_is_not_started_again(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap, workdir: Path
) -> None:
    asyncio.run(wait_for_handlers(system, "record_start"))
    model.script("start it once", tool_calls=[call("record_start", seconds=3)])
    model.script("started once", reply="Done once.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("record_start")])  # type: ignore[misc]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "start it once"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    row = wait_until(lambda: system.sql(
        "SELECT id, type, name, arguments, started_by FROM tool_calls"
        " WHERE run_id = $1 AND started_by IS NOT NULL", run.id))[0]  # fmt: skip
    key = f"{run.id}/{row['id']}"
    wait_until(lambda: starts(workdir, key))  # the handler is running now
    # The same order again, as a rebalance delivers it to another consumer while the first
    # still runs it: on other partitions, so other consumers take it at once.
    order = ExecuteToolCall(
        id="cmd_duplicate", run_id=run.id, thread_id=thread.id, tool_call_id=row["id"],
        tool_type=row["type"], name=row["name"], arguments=row["arguments"],
    ).model_dump_json()  # fmt: skip
    by_partition = {partition_of(f"other-{i}"): f"other-{i}" for i in range(64)}
    del by_partition[partition_of(thread.id)]
    others = list(by_partition.values())
    assert len(others) == 3  # every other partition, so every other consumer
    for other in others:
        tap.publish(json.loads(order), key=other, topic=topics.TOOL_CALLS)
    done = wait_until(
        lambda: (
            (r := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status
            in ("completed", "failed")
            and r
        )
    )
    assert done.status == "completed"
    step = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc")
    output = step.data[0].step_details.tool_calls[0].function.output  # type: ignore[union-attr]
    assert output == f"started once as {key}"  # the handler was given the idempotency key
    # Each of the three orders was looked at by the executor and not run again (it logs why:
    # the call runs elsewhere, or it is answered, or its result is on the way).
    refused = re.compile(rf"call {re.escape(key)} .*not (running|starting) it")
    wait_until(lambda: len(refused.findall(system.log("tool_executor"))) >= 3, timeout=30)
    assert len(starts(workdir, key)) == 1, starts(workdir, key)
