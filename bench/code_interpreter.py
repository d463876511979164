"""Code interpreter: cold start, warm overhead, and kernels per executor within a memory budget.

Latency is measured on the stream a client sees (official SDK, `runs.stream`), from
`thread.run.step.in_progress` of the tool_calls step to the `thread.run.step.delta` that
carries the call's outputs: dispatch through the outbox and Kafka, the tool-executor's work,
and the result's way back to the run-poller and the client.

- cold: a thread's first call (a new session: a kernel, its files placed), one new thread per
  sample, samples a second apart (an arrival rate, not back to back);
- warm: `print(1)` on a thread whose kernel is running.

The cell itself is also timed inside the executor's process (Sandbox.execute, no Kafka) to
split the warm figure into kernel and transport. Density starts kernels in this process with
the executor's default limits and reads their proportional memory (Pss) idle, then after
importing numpy, pandas and matplotlib.

    .venv/bin/python -m bench.code_interpreter --cold 20 --warm 50 --kernels 8
"""

import argparse
import asyncio
import json
import sys
import time
import warnings

from openai import OpenAI

from bench.harness import percentile, running
from services.tool_executor.bwrap import Limits
from services.tool_executor.sandbox import Sandbox
from tests.fakes.model_server import ScriptedModelServer
from tests.system import API_KEY

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK's Assistants notice


def measure(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str, thread_id: str, code: str
) -> float:
    """One run whose model calls code_interpreter once; ms from step in_progress to outputs."""
    ask = f"bench cell {time.monotonic_ns()}"
    call = {"name": "code_interpreter", "arguments": json.dumps({"code": code})}
    model.script(ask, tool_calls=[call])
    model.script(None, reply="ok", times=1)  # the answer once the output is back
    client.beta.threads.messages.create(thread_id, role="user", content=ask)
    started = outputs = None
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        for event in stream:
            if event.event == "thread.run.step.in_progress" and event.data.type == "tool_calls":
                started = time.monotonic()
            if event.event == "thread.run.step.delta" and outputs is None:
                details = event.data.delta.step_details
                calls = getattr(details, "tool_calls", None) or []
                if any(c.type == "code_interpreter" and c.code_interpreter
                       and c.code_interpreter.outputs for c in calls):  # fmt: skip
                    outputs = time.monotonic()
        assert stream.get_final_run().status == "completed"
    assert started is not None
    assert outputs is not None
    return (outputs - started) * 1000


def report(name: str, values: list[float]) -> None:
    """p50/p99/max of one series."""
    if not values:
        return
    print(f"{name}: n={len(values)} p50 {percentile(values, 50):.0f} ms,"
          f" p99 {percentile(values, 99):.0f} ms, max {max(values):.0f} ms")  # fmt: skip


async def kernel_figures(kernels: int, budget_mib: int) -> None:
    """Warm cell time inside the executor's process, then memory per kernel."""
    limits = Limits()
    started = time.monotonic()
    boxes = [await Sandbox.start(sys.executable, limits) for _ in range(kernels)]
    boot = (time.monotonic() - started) * 1000 / kernels
    print(f"kernel start (bwrap + ipykernel ready), sequential: {boot:.0f} ms each")
    cells = []
    for _ in range(50):
        t = time.monotonic()
        await boxes[0].execute("print(1)", seconds=10)
        cells.append((time.monotonic() - t) * 1000)
    report("print(1) in the kernel, no Kafka", cells)
    await asyncio.sleep(1)
    idle = [b.memory_bytes() / 2**20 for b in boxes]
    for box in boxes:
        await box.execute("import numpy, pandas, matplotlib.pyplot", seconds=60)
    used = [b.memory_bytes() / 2**20 for b in boxes]
    for label, values in (("idle, fresh", idle), ("after numpy+pandas+matplotlib", used)):
        mean = sum(values) / len(values)
        print(f"memory per kernel ({label}): {mean:.0f} MiB Pss;"
              f" {int(budget_mib // mean)} kernels in {budget_mib} MiB")  # fmt: skip
    for box in boxes:
        await box.close()


def main() -> None:
    """Start the system, measure cold and warm calls, then kernel density."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=20, help="first calls on new threads")
    parser.add_argument("--warm", type=int, default=50, help="print(1) calls on one thread")
    parser.add_argument("--kernels", type=int, default=8, help="kernels for the memory figure")
    parser.add_argument("--budget-mib", type=int, default=4096, help="memory budget per executor")
    parser.add_argument("--spares", type=int, default=1, help="THREADBUS_SANDBOX_SPARES")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data and logs)")
    args = parser.parse_args()
    env = {"THREADBUS_SANDBOX_SPARES": str(args.spares), "THREADBUS_SANDBOX_TIMEOUT_SECONDS": "60"}
    with running(keep=args.keep, env=env) as bench:
        client = OpenAI(base_url=bench.system.api_url, api_key=API_KEY)
        tools = [{"type": "code_interpreter"}]
        assistant = client.beta.assistants.create(model="gpt-4o", tools=tools)  # type: ignore[list-item]
        warmup = client.beta.threads.create()
        measure(client, bench.model, assistant.id, warmup.id, "print(0)")  # connections, consumers
        cold = []
        for _ in range(args.cold):
            time.sleep(1.0)
            thread = client.beta.threads.create()
            cold.append(measure(client, bench.model, assistant.id, thread.id, "print(1)"))
        thread = client.beta.threads.create()
        measure(client, bench.model, assistant.id, thread.id, "print(0)")
        warm = [measure(client, bench.model, assistant.id, thread.id, "print(1)")
                for _ in range(args.warm)]  # fmt: skip
        print(f"spares: {args.spares}; step in_progress -> outputs on the client's stream")
        report("cold start (first call on a thread)", cold)
        report("warm overhead (print(1))", warm)
    asyncio.run(kernel_figures(args.kernels, args.budget_mib))


if __name__ == "__main__":
    main()
