"""Pipeline benchmark: inbound Kafka user messages to `thread.message.completed`, end to end.

Starts a scripted model (instant echo replies), embedded Postgres + Tansu and the five services
exactly as `tests/system.py` does, creates one assistant, warms up, then pushes `--events`
inbound `threadbus.user_message` events over `--threads` new threads. Events of one thread go
one after another (the next only once the previous reply was seen, so each event gets its own
run); threads proceed concurrently. Latency per event: publish to `thread.message.completed`
seen on `threadbus.events`, matched by `causationid`.

    .venv/bin/python -m bench.pipeline --events 200 --threads 50
"""

import argparse
import asyncio
import json
import time
import uuid
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness import percentile, running
from schemas import topics
from tests.kafka_tap import user_message

DONE = "thread.message.completed"
STAGES = ("thread.run.created", "thread.run.in_progress")
"""Events whose `time` marks a stage of a run on its way to `DONE` (`Watcher.marks`)."""
FAILED = ("thread.message.incomplete", "thread.run.failed", "thread.run.expired", "error")


class Watcher:
    """Consumes `threadbus.events` and resolves a future per awaited inbound event id."""

    def __init__(self, bootstrap: str, *, stages: bool = False):
        self._stages = stages
        self._consumer = AIOKafkaConsumer(
            topics.EVENTS,
            bootstrap_servers=bootstrap,
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,  # the broker answers fetches only after the max wait
        )
        self._waiting: dict[str, asyncio.Future[tuple[float, bool]]] = {}
        self.marks: dict[str, dict[str, float]] = {}
        """With `stages`, per awaited event id, wall-clock seconds: the `time` of its run's
        `STAGES` events and of `DONE`, the `DONE` record's Kafka timestamp (`relayed`: when the
        outbox relay handed it to its producer) and when this consumer read it (`seen`); the
        caller adds `published` and takes the entry when the run is done."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and wait until the consumer has its partitions."""
        await self._consumer.start()
        deadline = time.monotonic() + 60
        while not self._consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError("the bench consumer got no partitions")
            await self._consumer.getmany(timeout_ms=200)  # joins the group; nothing awaited yet
        self._task = asyncio.create_task(self._consume())

    def expect(self, event_id: str) -> "asyncio.Future[tuple[float, bool]]":
        """A future of (monotonic time seen, succeeded) for the run caused by `event_id`."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        return future

    async def _consume(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            seen = time.monotonic()
            wall = time.time()
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    kind, cause = event.get("type"), event.get("causationid")
                    staged = kind in STAGES or kind == DONE
                    if self._stages and staged and cause in self._waiting:
                        marks = self.marks.setdefault(cause, {})
                        marks[kind] = datetime.fromisoformat(event["time"]).timestamp()
                        if kind == DONE:
                            marks.update(relayed=record.timestamp / 1000, seen=wall)
                    if kind != DONE and kind not in FAILED:
                        continue
                    future = self._waiting.pop(cause, None)
                    if future is not None and not future.done():
                        future.set_result((seen, kind == DONE))

    def pause(self) -> None:
        """Stop fetching (the consumer stays in its group): what the system spends without the
        benchmark's consumer waiting on the broker."""
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.assignment())

    async def stop(self) -> None:
        """Stop consuming and leave the group."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


class Pusher:
    """Publishes inbound events and awaits their replies; collects per-event results."""

    def __init__(self, producer: AIOKafkaProducer, watcher: Watcher, assistant: str, wait: float):
        self._producer, self._watcher = producer, watcher
        self._assistant, self._wait = assistant, wait
        self.latencies: list[float] = []
        self.failures = 0
        self.first_publish = self.last_done = 0.0

    async def one(self, thread_id: str, text: str) -> float:
        """Publish one user message and return its latency in seconds."""
        event = user_message(thread_id, self._assistant, text)
        reply = self._watcher.expect(event["id"])
        sent = time.monotonic()
        self.first_publish = self.first_publish or sent
        await self._producer.send_and_wait(
            topics.INBOUND, json.dumps(event).encode(), key=thread_id.encode()
        )
        seen, ok = await asyncio.wait_for(reply, self._wait)
        self.last_done = max(self.last_done, seen)
        if not ok:
            self.failures += 1
        return seen - sent

    async def thread(self, thread_id: str, count: int) -> None:
        """`count` messages on one thread, each after the previous one's reply."""
        for n in range(count):
            self.latencies.append(await self.one(thread_id, f"bench message {n}"))


async def measure(bootstrap: str, assistant: str, events: int, threads: int, wait: float) -> None:
    """Warm up, run the load, print the figures."""
    watcher = Watcher(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await watcher.start()
        warm = Pusher(producer, watcher, assistant, wait=180)
        warmup = await warm.one(f"thread_bench_{uuid.uuid4().hex}", "warm up")
        print(f"warm-up reply after: {warmup * 1000:.0f} ms (not counted)")
        pusher = Pusher(producer, watcher, assistant, wait)
        ids = [f"thread_bench_{uuid.uuid4().hex}" for _ in range(threads)]
        counts = [events // threads + (i < events % threads) for i in range(threads)]
        await asyncio.gather(*(pusher.thread(t, c) for t, c in zip(ids, counts, strict=True) if c))
    finally:
        await watcher.stop()
        await producer.stop()
    wall = pusher.last_done - pusher.first_publish
    ms = [x * 1000 for x in pusher.latencies]
    print(f"events: {len(ms)}")
    print(f"threads: {sum(1 for c in counts if c)}")
    print(f"failed runs: {pusher.failures}")
    print(f"wall time: {wall:.2f} s")
    print(f"runs/s: {len(ms) / wall:.1f}")
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        print(f"latency {name}: {percentile(ms, p):.0f} ms")


def main() -> None:
    """Parse arguments, start the system, benchmark, and stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200, help="inbound events to push")
    parser.add_argument("--threads", type=int, default=50, help="distinct new threads")
    parser.add_argument("--wait", type=float, default=60, help="max seconds to await one reply")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data and logs)")
    args = parser.parse_args()
    if args.events < 1 or args.threads < 1:
        parser.error("--events and --threads must be positive")
    try:
        with running(keep=args.keep) as bench:
            print(f"settings: events={args.events} threads={args.threads} model=instant echo")
            asyncio.run(
                measure(
                    bench.infra.bootstrap, bench.assistant_id, args.events, args.threads, args.wait
                )
            )
    except KeyboardInterrupt:
        print("interrupted")


if __name__ == "__main__":
    main()
