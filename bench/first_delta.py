"""Streaming latency: from the model's first token to the client's first `thread.message.delta`.

The token goes model → run-poller → outbox → relay → Kafka → the API's stream reader → SSE.
For each of `--runs` streamed runs (official SDK, `runs.stream`), the scripted model stamps
when it sends the first chunk and the client stamps when the first delta arrives; both live in
this process, so one monotonic clock measures the whole path.

Then, with `--waiting N`, what open streams cost while their runs wait on a model that thinks
(`--think` seconds): N streams at once, and the CPU a second each process spends meanwhile,
beyond what it spends idle, per open stream.

    .venv/bin/python -m bench.first_delta --runs 50 --waiting 20
"""

import argparse
import threading
import time
import warnings

from openai import OpenAI

from bench.harness import Bench, percentile, running
from bench.open_loop import cpu_by_pid, processes, spent
from tests.system import API_KEY

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK's Assistants notice


def first_deltas(bench: Bench, client: OpenAI, runs: int) -> list[float]:
    """Milliseconds from the model's first chunk to the client's first delta, run by run."""
    latencies: list[float] = []
    for n in range(runs + 1):
        text = f"latency probe {n}"
        bench.model.script(text, reply="a b c d e f g h", chunk_delay_s=0.01)
        thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
        first_delta = None
        with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=bench.assistant_id
        ) as stream:
            for event in stream:
                if event.event == "thread.message.delta" and first_delta is None:
                    first_delta = time.monotonic()
        assert first_delta is not None
        if n:  # the first run warms connections and consumers up
            latencies.append((first_delta - bench.model.first_token_at[text]) * 1000)
    return latencies


def waiting_cost(bench: Bench, client: OpenAI, streams: int, think: float) -> dict[str, float]:
    """Milliseconds of CPU a second, per open stream and process, while `streams` streams wait
    on the model (the same window measured idle first, and subtracted)."""
    window = think - 3.0  # from 1.5 s after the streams open to 1.5 s before the answers
    pids = processes(bench)
    before = cpu_by_pid(pids)
    time.sleep(window)
    idle = spent(before, cpu_by_pid(pids))
    bench.model.script("think while streaming", reply="Thought.", delay_s=think)
    threads = [
        client.beta.threads.create(messages=[{"role": "user", "content": "think while streaming"}])
        for _ in range(streams)
    ]

    def follow(thread_id: str) -> None:
        with client.beta.threads.runs.stream(
            thread_id=thread_id, assistant_id=bench.assistant_id
        ) as stream:
            for _ in stream:
                pass

    followers = [threading.Thread(target=follow, args=(t.id,)) for t in threads]
    for follower in followers:
        follower.start()
    time.sleep(1.5)
    before = cpu_by_pid(pids)
    time.sleep(window)
    busy = spent(before, cpu_by_pid(pids))
    for follower in followers:
        follower.join()
    return {name: (busy[name] - idle.get(name, 0.0)) * 1000 / window / streams for name in busy}


def main() -> None:
    """Start the system, stream runs one after another, print p50/p99."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="streamed runs to measure")
    parser.add_argument(
        "--waiting", type=int, default=0, help="streams open at once on a thinking model"
    )
    parser.add_argument("--think", type=float, default=8.0, help="how long that model thinks (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data and logs)")
    args = parser.parse_args()
    with running(keep=args.keep) as bench:
        client = OpenAI(base_url=bench.system.api_url, api_key=API_KEY, max_retries=0)
        latencies = first_deltas(bench, client, args.runs)
        print(f"runs: {len(latencies)} (sequential, one streamed run at a time)")
        for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
            print(f"first token -> first delta {name}: {percentile(latencies, p):.0f} ms")
        if args.waiting:
            cost = waiting_cost(bench, client, args.waiting, args.think)
            per = ", ".join(
                f"{name} {ms:.2f}" for name, ms in sorted(cost.items(), key=lambda kv: -kv[1])
            )
            print(
                f"{args.waiting} streams waiting on a model that thinks {args.think:.0f} s:"
                f" ms of CPU a second per open stream, beyond idle: {per}"
            )


if __name__ == "__main__":
    main()
