"""Chaos: hundreds of runs while service processes are SIGKILLed and Postgres restarts.

A system of its own (two run-pollers, two tool-executors, one of every other service) serves
300 runs: plain runs and server-side function runs from Kafka, and streaming clients over HTTP
that resume with `Last-Event-ID` when the API they read from is killed. Every
`KILL_EVERY_SECONDS` a random service process is SIGKILLed and started again; halfway through,
Postgres restarts. Afterwards every run is terminal and completed, each has exactly one reply,
each thread reads user, assistant, user, ... in the order sent, no stream client saw an event
twice, and no run is left in progress without an owner.
"""

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.runs import ACTIVE_STATUSES
from tests.chaos.clients import Progress, StreamingClient, wait_for_turn
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap, user_message
from tests.system import HEADERS, Infrastructure, System, answers, wait_until

KAFKA_THREADS, FUNCTION_THREADS, STREAMING_THREADS, TURNS = 40, 10, 10, 5
KILL_EVERY_SECONDS = 2.0
VICTIMS = ("api", "run_starter", "run_poller", "run_poller_2", "tool_executor",
           "tool_executor_2", "message_archiver")  # fmt: skip


@pytest.fixture
def chaos_system(tmp_path: Path, model: ScriptedModelServer) -> Iterator[System]:
    infra = Infrastructure(tmp_path).start()
    if infra.postgres is None:
        infra.stop()
        pytest.skip("the chaos test restarts the embedded Postgres")
    env = {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "k",
        "THREADBUS_FUNCTIONS": "lookup_weather=tests.fakes.functions:lookup_weather",
        "THREADBUS_CODE_INTERPRETER": "false",
        "THREADBUS_TOOL_WAIT_SECONDS": "5",
    }
    system = System(infra, env, tmp_path / "logs")
    for name in ("api", "run_starter", "run_poller", "tool_executor", "message_archiver"):
        system.spawn(name)
    system.spawn("run_poller", label="run_poller_2")
    system.spawn("tool_executor", label="tool_executor_2")
    try:
        yield system
    finally:
        system.stop()
        infra.stop()


class Chaos:
    """Kills a random service every few seconds and restarts it; times each recovery."""

    def __init__(self, system: System, seed: int):
        self._system = system
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self.kills: list[str] = []
        self.recoveries: list[float] = []
        self.unrecovered: list[str] = []
        self.postgres_down = 0.0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def restart_postgres(self) -> None:
        self.postgres_down = self._system.infra.restart_postgres()

    def _loop(self) -> None:
        while not self._stop.wait(KILL_EVERY_SECONDS):
            label = self._random.choice(VICTIMS)
            process = self._system.services[label]
            killed_at = time.monotonic()
            process.kill()
            self.kills.append(label)
            process.start()
            threading.Thread(
                target=self._watch, args=(label, process.proc, killed_at), daemon=True
            ).start()

    def _watch(self, label: str, incarnation: object, killed_at: float) -> None:
        """Time until the restarted process is ready, unless it is killed again first."""
        process = self._system.services[label]
        env = process.env
        url = (
            f"http://127.0.0.1:{self._system.api_port}/readyz?scope=self"
            if label == "api"
            else f"http://127.0.0.1:{env['THREADBUS_HEALTH_PORT']}/readyz"
        )
        while process.proc is incarnation and time.monotonic() < killed_at + 120:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    if process.proc is incarnation:
                        self.recoveries.append(time.monotonic() - killed_at)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        if process.proc is incarnation:
            self.unrecovered.append(label)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_runs_survive_killed_services_and_a_postgres_restart(
    chaos_system: System, model: ScriptedModelServer
) -> None:
    system = chaos_system
    model.script("weather in", tool_calls=[{"name": "lookup_weather",
                                            "arguments": '{"city": "Oslo"}'}])  # fmt: skip
    model.script("sunny in Oslo", reply="It is sunny in Oslo.")
    system.wait_healthy()
    wait_until(lambda: answers(system.api_url.removesuffix("/v1") + "/readyz"), timeout=90)
    api = httpx.Client(base_url=system.api_url, headers=HEADERS)
    plain = api.post("/assistants", json={"model": "gpt-4o"}).json()["id"]
    tools = [{"type": "function", "function": {"name": "lookup_weather",
                                               "parameters": {"type": "object"}}}]  # fmt: skip
    weather = api.post("/assistants", json={"model": "gpt-4o", "tools": tools}).json()["id"]
    tap = KafkaTap(system.infra.bootstrap).start()
    progress = Progress(system.infra.database_url).start()
    chaos = Chaos(system, seed=20261201)
    sent: dict[str, list[str]] = {}
    streams: list[StreamingClient] = []

    def kafka_thread(assistant: str, prompt: str) -> None:
        thread_id = f"thread_{uuid.uuid4().hex}"
        sent[thread_id] = []
        for turn in range(TURNS):
            text = f"{prompt} turn {turn} of {thread_id[-6:]}"
            sent[thread_id].append(text)
            tap.publish(user_message(thread_id, assistant, text), key=thread_id)
            wait_for_turn(progress, thread_id, turn + 1)

    def streaming_thread() -> None:
        thread_id = wait_until(lambda: _create_thread(api), timeout=120, interval=0.2)
        sent[thread_id] = []
        client = StreamingClient(system.api_url, thread_id, plain)
        streams.append(client)
        for turn in range(TURNS):
            text = f"stream turn {turn} of {thread_id[-6:]}"
            sent[thread_id].append(text)
            client.run(text, turn + 1)
            wait_for_turn(progress, thread_id, turn + 1)

    started = time.monotonic()
    chaos.start()
    try:  # a failure must not leave the chaos thread restarting services for the next tests
        with ThreadPoolExecutor(KAFKA_THREADS + FUNCTION_THREADS + STREAMING_THREADS) as pool:
            jobs = [pool.submit(kafka_thread, plain, "hello") for _ in range(KAFKA_THREADS)]
            jobs += [pool.submit(kafka_thread, weather, "weather in")
                     for _ in range(FUNCTION_THREADS)]  # fmt: skip
            jobs += [pool.submit(streaming_thread) for _ in range(STREAMING_THREADS)]
            wait_until(lambda: progress.finished() >= 150, timeout=400, interval=0.5)
            chaos.restart_postgres()  # under load: half the runs are done, the rest in flight
            for job in jobs:
                job.result(timeout=600)
    finally:
        chaos.stop()
        elapsed = time.monotonic() - started
        tap.stop()
        progress.stop()
        api.close()

    runs = asyncio.run(_rows(system.infra.database_url))
    total = (KAFKA_THREADS + FUNCTION_THREADS + STREAMING_THREADS) * TURNS
    print(
        f"\nchaos: {len(runs['runs'])} runs in {elapsed:.0f} s; {len(chaos.kills)} kills "
        f"({', '.join(f'{v} {chaos.kills.count(v)}' for v in VICTIMS)}); "
        f"{len(chaos.recoveries)} timed recoveries, slowest {max(chaos.recoveries):.1f} s, "
        f"median {sorted(chaos.recoveries)[len(chaos.recoveries) // 2]:.1f} s; "
        f"Postgres down {chaos.postgres_down:.1f} s"
    )
    assert len(runs["runs"]) == total
    assert {r["status"] for r in runs["runs"]} == {"completed"}
    assert not [r for r in runs["runs"] if r["status"] in ACTIVE_STATUSES]
    replies: dict[str, int] = {}
    for message in runs["messages"]:
        if message["role"] == "assistant":
            replies[message["run_id"]] = replies.get(message["run_id"], 0) + 1
    assert {r["id"]: replies.get(r["id"], 0) for r in runs["runs"]} == {
        r["id"]: 1 for r in runs["runs"]
    }
    for thread_id, texts in sent.items():
        roles = [m["role"] for m in runs["messages"] if m["thread_id"] == thread_id]
        users = [m["text"] for m in runs["messages"]
                 if m["thread_id"] == thread_id and m["role"] == "user"]  # fmt: skip
        assert roles == ["user", "assistant"] * TURNS, thread_id
        assert users == texts, thread_id
    for client in streams:
        assert len(client.ids) == len(set(client.ids)), "a stream client saw an event twice"
        assert client.completed == TURNS
    assert len(chaos.kills) >= 10
    assert not chaos.unrecovered  # (a process killed again before it was ready is not timed)


def _create_thread(api: httpx.Client) -> str | None:
    """A new thread, or None while the API is down (retried)."""
    try:
        response = api.post("/threads", json={})
    except httpx.HTTPError:
        return None
    return str(response.json()["id"]) if response.status_code == 200 else None


async def _rows(dsn: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        runs = await conn.fetch("SELECT id, thread_id, status, lease_owner FROM runs")
        messages = await conn.fetch(
            "SELECT thread_id, role, run_id, content->0->'text'->>'value' AS text"
            " FROM messages ORDER BY thread_id, seq"
        )
    finally:
        await conn.close()
    return {"runs": [dict(r) for r in runs], "messages": [dict(m) for m in messages]}
