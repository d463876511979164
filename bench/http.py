"""The HTTP path with the official SDK: create a thread and run, poll until it ends.

Each run is `client.beta.threads.create_and_run_poll(..., poll_interval_ms=20)`: one request
creates the thread, its message and the run, then the SDK polls the run every 20 ms until it
is terminal (instant scripted model). Two figures:

- sequential: one client, one run after another; latency per run, p50 and p99;
- concurrent: `--clients` clients (threads, each its own SDK client) in a loop for
  `--seconds`; completed runs per second, and the CPU per run of every process (the
  benchmark's own process runs the clients and the scripted model).

The services run with their deployed timings (`bench.open_loop.as_deployed`).

    .venv/bin/python -m bench.http --runs 200 --clients 16 --seconds 20
"""

import argparse
import os
import threading
import time
import warnings

from openai import OpenAI

from bench.harness import Bench, percentile, running
from bench.open_loop import as_deployed, cpu_by_pid, processes, spent
from tests.system import API_KEY

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK's Assistants notice

POLL_MS = 20


def one_run(client: OpenAI, assistant_id: str) -> float:
    """Create a thread and run, poll until it ends; seconds taken (raises if it failed)."""
    started = time.monotonic()
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant_id,
        thread={"messages": [{"role": "user", "content": "http bench"}]},
        poll_interval_ms=POLL_MS,
    )
    if run.status != "completed":
        raise RuntimeError(f"run {run.id} ended {run.status}: {run.last_error}")
    return time.monotonic() - started


def summary(ms: list[float], points: tuple[tuple[str, float], ...]) -> str:
    """`latency: p50 x ms, ...`."""
    return "latency: " + ", ".join(f"{name} {percentile(ms, p):.1f} ms" for name, p in points)


def sequential(bench: Bench, runs: int) -> None:
    client = OpenAI(base_url=bench.system.api_url, api_key=API_KEY, max_retries=0)
    for _ in range(10):  # warm-up: connections, consumers, caches
        one_run(client, bench.assistant_id)
    latencies = [one_run(client, bench.assistant_id) * 1000 for _ in range(runs)]
    print(f"\n== sequential create-and-poll ({POLL_MS} ms polling), {runs} runs")
    print(summary(latencies, (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))))


def concurrent(bench: Bench, clients: int, seconds: float) -> None:
    done: list[float] = []
    failures: list[str] = []
    stop = time.monotonic() + seconds

    def loop() -> None:
        client = OpenAI(base_url=bench.system.api_url, api_key=API_KEY, max_retries=0)
        while time.monotonic() < stop:
            try:
                done.append(one_run(client, bench.assistant_id))
            except Exception as exc:  # counted, not fatal: the figure says how many failed
                failures.append(f"{type(exc).__name__}: {exc}")

    pids = {**processes(bench), "bench (clients and model)": [os.getpid()]}
    before = cpu_by_pid(pids)
    started = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    cpu = spent(before, cpu_by_pid(pids))
    ms = [d * 1000 for d in done]
    print(f"\n== {clients} concurrent clients for {seconds:g} s")
    print(f"completed: {len(done)}, failed: {len(failures)}, throughput: "
          f"{len(done) / elapsed:.1f} runs/s")  # fmt: skip
    if ms:
        print(summary(ms, (("p50", 50), ("p99", 99))))
    if done:
        ranked = sorted(cpu.items(), key=lambda kv: -kv[1])
        parts = ", ".join(f"{name} {seconds * 1000 / len(done):.2f}" for name, seconds in ranked)
        print(f"CPU per run, ms: {parts}")
    for failure in sorted(set(failures))[:5]:
        print(f"  failure: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="sequential runs to measure")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=20, help="how long clients run")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs")
    args = parser.parse_args()
    with running(keep=args.keep, env=as_deployed()) as bench:
        sequential(bench, args.runs)
        concurrent(bench, args.clients, args.seconds)


if __name__ == "__main__":
    main()
