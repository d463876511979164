"""The run-starter commits the offsets of handled inbound events together (`LaterCommits`), not
one by one: a run-starter killed before its next commit leaves events it handled uncommitted,
and its successor reads them again and starts nothing twice."""

import asyncio
import time
import uuid

import pytest
from aiokafka import TopicPartition
from openai import OpenAI

from schemas import topics
from services.core import ops
from tests.kafka_tap import KafkaTap, user_message
from tests.system import System, wait_until


def committed(bootstrap: str, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
    """The run-starter group's committed offsets of `partitions` (-1: none)."""
    return asyncio.run(ops.committed_offsets(bootstrap, topics.GROUP_RUN_STARTER, partitions))


Where = list[tuple[TopicPartition, int]]


def handled_uncommitted(
    system: System, tap: KafkaTap, assistant_id: str, until: str
) -> tuple[list[str], Where, float]:
    """With a run-starter that commits once a minute (it replaces the running one, which is
    killed), publish a message on each of three new threads and wait for each thread's `until`
    event: handled events whose offsets are not committed. Returns the threads, where each
    event landed, and when the first was published (`time.monotonic()`): the run-starter's
    timed commit comes no sooner than a minute after that."""
    system.spawn("run_starter", THREADBUS_INBOUND_COMMIT_MS="60000")
    wait_until(lambda: system.ready("run_starter"), timeout=60,
               explain=lambda: system.log("run_starter")[-4000:])  # fmt: skip
    threads = [f"thread_{uuid.uuid4().hex}" for _ in range(3)]
    published = time.monotonic()
    sent = [tap.publish(user_message(t, assistant_id, f"hello {n}"), key=t)
            for n, t in enumerate(threads)]  # fmt: skip
    where = [(TopicPartition(topics.INBOUND, m.partition), m.offset) for m in sent]
    for thread in threads:
        wait_until(lambda t=thread: [e for e in tap.events(t) if e["type"] == until],
                   timeout=60)  # fmt: skip
    before = committed(system.infra.bootstrap, {tp for tp, _ in where})
    assert all(before[tp] <= offset for tp, offset in where), (before, where)
    return threads, where, published


def wait_committed_past(bootstrap: str, where: Where, timeout: float) -> None:
    """Until the group's committed offsets are past every one of these events."""
    partitions = {tp for tp, _ in where}

    def passed() -> bool:
        now = committed(bootstrap, partitions)
        return all(now[tp] > offset for tp, offset in where)

    wait_until(
        passed, timeout=timeout, interval=0.5,
        explain=lambda: f"{committed(bootstrap, partitions)} against {where}",
    )  # fmt: skip


@pytest.mark.slow
def test_a_run_starter_killed_before_its_offsets_commit_starts_each_run_once(
    client: OpenAI, system: System, tap: KafkaTap
) -> None:
    assistant = client.beta.assistants.create(name="Once", model="gpt-4o")
    restored = False
    try:
        # The fault's moment: every event was handled (its run even ended), no offset of them
        # was committed.
        threads, where, _ = handled_uncommitted(system, tap, assistant.id, "thread.run.completed")
        system.services["run_starter"].kill()

        system.spawn("run_starter")  # the default interval
        restored = True
        # It commits only what it handled: past every event, so it read each one again.
        wait_committed_past(system.infra.bootstrap, where, timeout=90)

        for thread in threads:
            runs = client.beta.threads.runs.list(thread_id=thread).data
            assert [r.status for r in runs] == ["completed"]
            roles = [m.role for m in client.beta.threads.messages.list(thread_id=thread).data]
            assert sorted(roles) == ["assistant", "user"]
            created = [e for e in tap.events(thread) if e["type"] == "thread.run.created"]
            assert len(created) == 1
    finally:
        if not restored:
            system.spawn("run_starter")


@pytest.mark.slow
def test_a_rebalance_commits_the_handled_events_of_the_partitions_it_takes(
    client: OpenAI, system: System, tap: KafkaTap
) -> None:
    assistant = client.beta.assistants.create(name="Handed over", model="gpt-4o")
    try:
        _, where, published = handled_uncommitted(system, tap, assistant.id, "thread.run.created")
        # A second run-starter joins: the rebalance takes the first one's partitions, and it
        # commits what it handled of them before it lets them go. Only the rebalance can have
        # committed them before the first one's timed commit, a minute after they came.
        system.spawn("run_starter", label="starter-b", THREADBUS_INBOUND_COMMIT_MS="60000")
        left = 55 - (time.monotonic() - published)
        assert left > 20, f"the events took {55 - left:.0f} s to be handled"
        wait_committed_past(system.infra.bootstrap, where, timeout=left)
    finally:
        if (second := system.services.pop("starter-b", None)) is not None:
            second.kill()
        system.spawn("run_starter")
