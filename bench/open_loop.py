"""Open-loop benchmark: inbound events at a fixed arrival rate, latency to the reply, CPU per run.

Starts the system as `bench/harness.py` does (instant scripted model), then for each rate of
`--rates` publishes `threadbus.user_message` events at that rate for `--seconds`, each on a new
thread (with `--turns K`, K on each thread, spread over the step: a conversation's later turns
find their thread), whatever the replies do (open loop: a slow system shows as growing latency
and lost runs, not as a lower offered rate). Latency per event: publish to
`thread.message.completed` on `threadbus.events`, matched by `causationid`. A run not answered
within `--wait` seconds of its publish counts as lost.

Stages: where the latency goes, read from the clocks the run's own events carry (every process
is on one machine): publish to `thread.run.created`'s `time` (the broker's hop to the
run-starter and the intake until it builds its events), to `thread.run.in_progress`'s (the
intake's commit, the NOTIFY, the run-poller's wake-up), to `thread.message.completed`'s (the
claim, the model call, the final transaction until it builds the event), to that record's Kafka
timestamp (the commit, the relay's gathering, read and send) and to this consumer's read (the
broker's hop to a consumer outside Threadbus).

CPU per run: each process's user + system time (from /proc) over the whole step, divided by the
runs completed in it: every service, the broker and Postgres (its postmaster and backends).
The knee is the highest rate whose runs all completed with p99 under a second. The services
run with their deployed timings (`as_deployed`), not the test suite's short leases and sweeps.
The rates run one after another on one system unless `--fresh` starts a new one for each: the
embedded broker spends more per record the more it holds, so a later rate pays for the earlier.

    .venv/bin/python -m bench.open_loop --rates 5,40,100,150 --seconds 20
"""

import argparse
import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.harness import Bench, percentile, running
from bench.pipeline import Watcher
from schemas import topics
from tests.kafka_tap import user_message

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_pids(data_dir: str) -> list[int]:
    """The Postgres serving `data_dir`: its postmaster and the postmaster's children (backends,
    walwriter, ...). Read afresh each time: backends come and go."""
    parents: dict[int, int] = {}
    master = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[1])
        if b"postgres" in cmdline and data_dir.encode() in cmdline:
            master = int(entry.name)
    if master is None:
        return []
    return [master, *(pid for pid, parent in parents.items() if parent == master)]


def processes(bench: Bench) -> dict[str, list[int]]:
    """The pids to account, by name."""
    found: dict[str, list[int]] = {}
    for label, service in bench.system.services.items():
        if service.proc is not None:
            found.setdefault(label.replace("_", "-"), []).append(service.proc.pid)
    kafka = bench.infra.kafka
    if kafka is not None and kafka.pid is not None:
        found["broker"] = [kafka.pid]
    postgres = bench.infra.postgres
    if postgres is not None:
        found["postgres"] = postgres_pids(str(postgres.data_dir))
    return found


def cpu_by_pid(pids: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    return {name: {pid: cpu_seconds(pid) for pid in group} for name, group in pids.items()}


def spent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds per name between two readings; a process that started in between counts from
    zero, one that ended in between is not counted (its last seconds are lost)."""
    return {name: sum(max(0.0, now - before.get(name, {}).get(pid, 0.0))
                      for pid, now in group.items() if now)
            for name, group in after.items()}  # fmt: skip


@dataclass
class Step:
    """The figures of one offered rate."""

    rate: float
    offered: int = 0
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    failed: int = 0
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    own_cpu: float = 0.0
    """The benchmark's process: the scripted model, the producer and the consumer."""
    transactions: int = 0
    stages: list[dict[str, float]] = field(default_factory=list)
    """`Watcher.marks` of each completed run."""

    @property
    def completed(self) -> int:
        return len(self.latencies)


async def committed(dsn: str) -> int:
    """Transactions Postgres has counted for the database so far (its statistics lag by up
    to a second, which is nothing over a step)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        value = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(value)


async def step(bench: Bench, producer: AIOKafkaProducer, watcher: Watcher, rate: float,
               seconds: float, wait: float, turns: int = 1) -> Step:  # fmt: skip
    """Offer `rate` runs a second for `seconds`, `turns` on each thread (event n goes to thread
    n mod threads, so a thread's turns are about `seconds / turns` apart; when the events do not
    divide by `turns`, some threads take one more); wait for the stragglers; measure."""
    result = Step(rate=rate)
    before = cpu_by_pid(processes(bench))
    own_before = cpu_seconds(os.getpid())
    transactions = await committed(bench.infra.database_url)
    started = time.monotonic()
    pending: list[asyncio.Task[None]] = []

    total = int(rate * seconds)
    threads = [f"thread_open_{uuid.uuid4().hex}" for _ in range(max(1, total // turns))]

    async def one(thread_id: str) -> None:
        event = user_message(thread_id, bench.assistant_id, "open loop")
        reply = watcher.expect(event["id"])
        watcher.marks[event["id"]] = {"published": time.time()}  # before its own send
        sent = time.monotonic()
        await producer.send(topics.INBOUND, json.dumps(event).encode(), key=thread_id.encode())
        try:
            seen, ok = await asyncio.wait_for(reply, wait)
        except TimeoutError:
            result.lost += 1
            return
        finally:
            marks = watcher.marks.pop(event["id"], {})
        if ok:
            result.latencies.append(seen - sent)
            result.stages.append(marks)
        else:
            result.failed += 1

    for n in range(total):
        due = started + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(one(threads[n % len(threads)])))
    result.offered = total
    await asyncio.gather(*pending)
    result.wall = time.monotonic() - started
    result.cpu = spent(before, cpu_by_pid(processes(bench)))
    result.own_cpu = cpu_seconds(os.getpid()) - own_before
    await asyncio.sleep(1.0)  # backends report their counts within a second
    result.transactions = await committed(bench.infra.database_url) - transactions
    return result


def report(result: Step) -> None:
    ms = [x * 1000 for x in result.latencies]
    done = result.completed
    print(f"\n== offered {result.rate:g} runs/s for {result.offered / result.rate:.0f} s"
          f" ({result.offered} runs)")  # fmt: skip
    print(f"completed: {done}, lost: {result.lost}, failed: {result.failed},"
          f" throughput: {done / result.wall:.1f} runs/s")  # fmt: skip
    if ms:
        print("latency: " + ", ".join(f"{name} {percentile(ms, p):.1f} ms" for name, p in
              (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))))  # fmt: skip
    print_stages(result.stages)
    if done:
        per_run = {name: seconds * 1000 / done for name, seconds in result.cpu.items()}
        total = sum(per_run.values())
        parts = ", ".join(f"{name} {value:.2f}" for name, value in
                          sorted(per_run.items(), key=lambda kv: -kv[1]))  # fmt: skip
        print(f"CPU per run: {total:.2f} ms ({parts})")
        print(f"the benchmark's own process (scripted model, producer, consumer; not above):"
              f" {result.own_cpu * 1000 / done:.2f} ms per run")  # fmt: skip
        print(f"Postgres transactions per run: {result.transactions / done:.1f}"
              " (each statement outside a transaction counts as one)")  # fmt: skip


STAGES = (
    ("published", "thread.run.created", "to the intake's events"),
    ("thread.run.created", "thread.run.in_progress", "to the claim"),
    ("thread.run.in_progress", "thread.message.completed", "the turn"),
    ("thread.message.completed", "relayed", "to the relay's send"),
    ("relayed", "seen", "to the consumer"),
)
"""Where a run's latency goes, from the clocks `Watcher.marks` reads (every process on one
machine, so one clock): an event's `time` is when its service built it, before its commit."""


def print_stages(stages: list[dict[str, float]]) -> None:
    marks = [m for m in stages if all(k in m for stage in STAGES for k in stage[:2])]
    if not marks:
        return
    parts = []
    for start, end, name in STAGES:
        ms = [(m[end] - m[start]) * 1000 for m in marks]
        parts.append(f"{name} {percentile(ms, 50):.1f} ({percentile(ms, 90):.1f})")
    print(f"stages, p50 (p90) ms, {len(marks)} runs: " + ", ".join(parts))


async def idle(bench: Bench, watcher: Watcher, seconds: float) -> None:
    """Print what the system spends doing nothing (consumers' fetches, timers), per process:
    with the benchmark's consumer waiting on the broker, as in every step, and without it."""
    try:
        for paused in (False, True):
            if paused:
                watcher.pause()
            before = cpu_by_pid(processes(bench))
            await asyncio.sleep(seconds)
            used = spent(before, cpu_by_pid(processes(bench)))
            per_second = {name: value * 1000 / seconds for name, value in used.items()}
            parts = ", ".join(f"{name} {value:.1f}" for name, value in
                              sorted(per_second.items(), key=lambda kv: -kv[1]))  # fmt: skip
            label = "idle CPU, the benchmark's consumer paused," if paused else "idle CPU"
            print(f"{label} over {seconds:g} s: {sum(per_second.values()):.1f} ms/s ({parts})")
    finally:
        watcher.resume()


async def measure(
    bench: Bench, rates: list[float], seconds: float, wait: float, turns: int
) -> list[Step]:
    watcher = Watcher(bench.infra.bootstrap, stages=True)
    producer = AIOKafkaProducer(bootstrap_servers=bench.infra.bootstrap, acks="all",
                                linger_ms=0)  # fmt: skip
    await producer.start()
    try:
        await watcher.start()
        warm = await step(bench, producer, watcher, rate=5, seconds=4, wait=180)
        print(f"warm-up: {warm.completed} runs (not counted); turns per thread: {turns}")
        await idle(bench, watcher, 10)
        results = []
        for rate in rates:
            results.append(await step(bench, producer, watcher, rate, seconds, wait, turns))
            report(results[-1])
    finally:
        await watcher.stop()
        await producer.stop()
    return results


def print_knee(results: list[Step]) -> None:
    good = [r for r in results if r.completed == r.offered and r.latencies
            and percentile(r.latencies, 99) < 1.0]  # fmt: skip
    knee = max((r.rate for r in good), default=None)
    print(f"\nknee (every run answered, p99 < 1 s): {knee if knee is not None else 'none'} runs/s")


def as_deployed() -> dict[str, str]:
    """The services' own defaults for the timings the test suite shortens (leases, sweeps,
    executor consumers, the indexer's poll): CPU per run is measured as an operator runs the
    system."""
    from services.file_indexer.settings import Settings as IndexerSettings
    from services.run_poller.settings import Settings as PollerSettings
    from services.tool_executor.settings import Settings as ExecutorSettings

    poller, executor = PollerSettings.model_fields, ExecutorSettings.model_fields
    indexer = IndexerSettings.model_fields
    return {
        "THREADBUS_POLL_INTERVAL_SECONDS": str(indexer["poll_interval_seconds"].default),
        "THREADBUS_LEASE_SECONDS": str(poller["lease_seconds"].default),
        "THREADBUS_SWEEP_INTERVAL_SECONDS": str(poller["sweep_interval_seconds"].default),
        "THREADBUS_WAKEUP_GRACE_SECONDS": str(poller["wakeup_grace_seconds"].default),
        "THREADBUS_WORKERS": str(executor["workers"].default),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="5,40,100,150", help="offered runs/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20, help="how long each rate is offered")
    parser.add_argument("--wait", type=float, default=60, help="a run later than this is lost")
    parser.add_argument(
        "--turns",
        type=int,
        default=1,
        help="events on each thread in a step (1: every event on a new thread)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new system for each rate: the embedded broker spends more per record the"
        " more it holds, so without this a rate pays for the ones before it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data and logs")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    results: list[Step] = []
    for group in [[rate] for rate in rates] if args.fresh else [rates]:
        with running(keep=args.keep, env=as_deployed()) as bench:
            results += asyncio.run(measure(bench, group, args.seconds, args.wait, args.turns))
    print_knee(results)


if __name__ == "__main__":
    main()
