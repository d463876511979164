"""Two run-pollers and one run: racing for it, and a stale one waking after a takeover."""

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from openai import OpenAI
from openai.types.beta import Thread
from openai.types.beta.threads import Run

from schemas import topics
from schemas.events import ProcessRun
from services.core.supervisor import ServiceProcess
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.system import System, partition_of, wait_until


@pytest.fixture
def second_poller(system: System) -> Iterator[ServiceProcess]:
    """One more run-poller beside the suite's, both consuming."""
    poller = system.spawn("run_poller", label="run_poller_race")
    wait_until(lambda: system.ready("run_poller_race"), timeout=90, explain=system.diagnose)
    try:
        yield poller
    finally:
        poller.kill()  # not a graceful leave: see System.spawn


def _answering(
    client: OpenAI,
    model: ScriptedModelServer,
    system: System,
    tap: KafkaTap,
    prompt: str,
    words: int,
    *,
    then: str,
) -> tuple[Thread, Run, int, str]:
    """A run whose reply streams `words` words at 20 a second (a second attempt answers `then`),
    once its first delta is out; with the pid and label of the run-poller driving it."""
    reply = " ".join(f"w{i}" for i in range(words))
    model.script(prompt, reply=reply, chunk_delay_s=0.05, times=1)
    model.script(prompt, reply=then)
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": prompt}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_until(lambda: [e for e in tap.events(thread.id) if e["type"] == "thread.message.delta"])
    owner = system.sql("SELECT lease_owner FROM runs WHERE id = $1", run.id)[0]["lease_owner"]
    pid = int(owner.split(":")[1])
    label = next(label for label, p in system.services.items() if p.proc and p.proc.pid == pid)
    return thread, run, pid, label


def _only_the_new_owner_wrote(
    client: OpenAI, system: System, tap: KafkaTap, run: Run, stale: str, text: str
) -> None:
    """The run was claimed twice, the stale owner (`stale`, a service label) saw its lease
    lost, and the run has one reply, the new owner's `text`, and one completion event."""
    attempts = system.sql("SELECT attempts FROM runs WHERE id = $1", run.id)[0]["attempts"]
    assert attempts == 2
    log = wait_until(lambda: f"run {run.id}: lease lost" in (seen := system.log(stale)) and seen,
                     timeout=30)  # fmt: skip
    assert f"run {run.id}: lease lost" in log
    replies = [m for m in client.beta.threads.messages.list(thread_id=run.thread_id).data
               if m.role == "assistant"]  # fmt: skip
    assert len(replies) == 1
    assert replies[0].content[0].text.value == text  # type: ignore[union-attr]
    assert client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id).status == "completed"
    finals = wait_until(lambda: [e for e in tap.events(run.thread_id)
                                 if e["type"] == "thread.run.completed"])  # fmt: skip
    assert len(finals) == 1


def _finished(client: OpenAI, thread_id: str, run_id: str) -> Any:
    run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
    return run if run.status in ("completed", "failed", "expired") else None


@pytest.mark.slow
@pytest.mark.usefixtures("second_poller")
def test_two_run_pollers_racing_for_one_run_drive_it_once(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    model.script("race for me", reply="Driven once.", delay_s=1)
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "race for me"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    # The same wake-up on every partition at once: each run-poller's consumers offer the run.
    keys = {partition_of(f"race-{i}"): f"race-{i}" for i in range(64)}
    assert len(keys) == 4
    for n, key in enumerate(keys.values()):
        order = ProcessRun(id=f"cmd_race_{n}", run_id=run.id, thread_id=thread.id)
        tap.publish(json.loads(order.model_dump_json()), key=key, topic=topics.RUNS)
    done = wait_until(lambda: _finished(client, thread.id, run.id), timeout=30)
    assert done.status == "completed"
    attempts = system.sql("SELECT attempts FROM runs WHERE id = $1", run.id)[0]["attempts"]
    assert attempts == 1  # one claim won; every other offer found it claimed
    asked = [r for r in model.requests if "race for me" in json.dumps(r["messages"][-1])]
    assert len(asked) == 1
    replies = [m for m in client.beta.threads.messages.list(thread_id=thread.id).data
               if m.role == "assistant"]  # fmt: skip
    assert len(replies) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("second_poller")
def test_a_stale_run_poller_waking_after_a_takeover_cannot_write(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    thread, run, pid, label = _answering(
        client, model, system, tap, "stale owner", 200, then="Written by the new owner."
    )  # 10 s of tokens
    os.kill(pid, signal.SIGSTOP)  # frozen mid-answer, holding the lease
    try:
        done = wait_until(lambda: _finished(client, thread.id, run.id), timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)  # it wakes believing it still drives the run
    assert done.status == "completed"
    _only_the_new_owner_wrote(client, system, tap, run, label, "Written by the new owner.")


_BUSY = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
    " AND state IN ('active', 'idle in transaction')"
)
"""Backends of that process running a statement, or inside a transaction waiting for its
client's next one."""
_STATE = "SELECT state, state_change, backend_xid FROM pg_stat_activity WHERE pid = $1"
_WROTE_THE_RUN = (
    "SELECT a.backend_xid IN (r.xmin, r.xmax) FROM runs r, pg_stat_activity a"
    " WHERE r.id = $1 AND a.pid = $2"
)
"""The backend's transaction locked or wrote the run's row (an open one: its lock holds)."""


def _stopped(pid: int) -> bool:
    """Every thread of the process is stopped (SIGSTOP takes effect a moment after kill)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
    return all(state == "T" for state in states)


def _freeze_inside_a_transaction(database_url: str, pid: int, run_id: str) -> int | None:
    """Stop the process at a moment one of its transactions holds the run's row lock; the
    backend's pid, or None when no try in 20 s caught one (the process is then left running).

    A stop that lands while a statement of that transaction is in flight counts too: the
    process cannot send the next one, so the backend ends idle in the transaction. One that
    lands just after the process wrote its `COMMIT` does not: the backend, not yet done
    reading, looks idle in the transaction for a moment, so the state must hold still."""

    async def settled(conn: asyncpg.Connection, backend: int) -> asyncpg.Record | None:
        """The backend's state once it is idle inside a transaction, else None."""
        limit = time.monotonic() + 0.2  # the process stays stopped meanwhile
        while time.monotonic() < limit:
            row = await conn.fetchrow(_STATE, backend)
            if row is None or row["state"] not in ("active", "idle in transaction"):
                return None  # the statement in flight was the commit
            if row["state"] == "idle in transaction":
                return row
            await asyncio.sleep(0.002)
        return None

    async def holds_the_run(conn: asyncpg.Connection, backend: int) -> bool:
        before = await settled(conn, backend)
        if before is None or not await conn.fetchval(_WROTE_THE_RUN, run_id, backend):
            return False
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '200ms'")
                await conn.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE NOWAIT", run_id)
        except asyncpg.LockNotAvailableError:
            await asyncio.sleep(0.05)
            now = await conn.fetchrow(_STATE, backend)
            return now is not None and tuple(now) == tuple(before)  # still, as it was
        return False

    async def tries() -> int | None:
        conn = await asyncpg.connect(database_url)
        try:
            deadline = time.monotonic() + 20  # of the run's 30 s of tokens
            while time.monotonic() < deadline:
                os.kill(pid, signal.SIGSTOP)
                try:
                    wait_until(lambda: _stopped(pid), timeout=5, interval=0.001)
                    for row in await conn.fetch(_BUSY, f"threadbus run-poller {pid}"):
                        if await holds_the_run(conn, row["pid"]):
                            return int(row["pid"])
                except BaseException:
                    os.kill(pid, signal.SIGCONT)  # a failing test must not leave it stopped
                    raise
                os.kill(pid, signal.SIGCONT)
                await asyncio.sleep(random.uniform(0.001, 0.03))
            return None
        finally:
            await conn.close()

    return asyncio.run(tries())


@pytest.mark.slow
@pytest.mark.usefixtures("second_poller")
def test_a_run_poller_frozen_inside_a_transaction_does_not_hold_up_the_takeover(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    thread, run, pid, label = _answering(
        client, model, system, tap, "frozen writer", 600, then="Taken over."
    )  # 30 s of tokens
    # Frozen between two statements of a reply write: the thread and the run stay locked for
    # as long as its connection lives.
    backend = _freeze_inside_a_transaction(system.infra.database_url, pid, run.id)
    assert backend is not None, "never caught the run-poller holding the run inside a transaction"
    try:
        done = wait_until(lambda: _finished(client, thread.id, run.id), timeout=60)
        gone = not system.sql("SELECT 1 FROM pg_stat_activity WHERE pid = $1", backend)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert gone  # Postgres closed the frozen connection, which released its locks
    assert done.status == "completed"
    _only_the_new_owner_wrote(client, system, tap, run, label, "Taken over.")
