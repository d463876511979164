"""The group's partitions are spread over its processes before their consumers."""

import asyncio
import random
import uuid
from collections import Counter

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from services.core.assignor import STRATEGY, SpreadAssignor
from tests.system import Infrastructure


class Cluster(ClusterMetadata):  # type: ignore[misc]
    def __init__(self, partitions: dict[str, int]) -> None:
        super().__init__()
        self.counts = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.counts[topic])) if topic in self.counts else None


def _members(
    processes: int, consumers: int, topics: list[str], rng: random.Random, *, first: int = 0
) -> dict[str, tuple[str, ConsumerProtocolMemberMetadata]]:
    """Member id -> (its process, its metadata), ids as the broker makes them; the processes
    are numbered from `first`."""
    members = {}
    for p in range(first, first + processes):
        for _ in range(consumers):
            member_id = f"tool-executor-{uuid.UUID(int=rng.getrandbits(128))}"
            members[member_id] = (
                f"p{p}",
                ConsumerProtocolMemberMetadata(0, topics, f"host/{p}".encode()),
            )
    return members


def _per_process(assigner: type, members: dict, cluster: Cluster) -> Counter[str]:
    """How many partitions each process that holds some holds; with no more partitions than
    consumers, each of a process's consumers holds at most one (checked for the spread)."""
    dealt = assigner.assign(cluster, {m: meta for m, (_, meta) in members.items()})
    held: Counter[str] = Counter()
    for member_id, assignment in dealt.items():
        count = sum(len(ps) for _, ps in assignment.assignment)
        if assigner is SpreadAssignor and sum(cluster.counts.values()) <= len(members):
            assert count <= 1, f"{member_id} holds {count} while another consumer idles"
        held[members[member_id][0]] += count
    return +held  # the processes that hold something


def test_every_process_gets_its_share_whatever_the_member_ids() -> None:
    rng = random.Random(7)
    cluster = Cluster({"threadbus.tool_calls": 4})
    round_robin_starved = 0
    for _ in range(300):
        members = _members(2, 4, ["threadbus.tool_calls"], rng)
        assert _per_process(SpreadAssignor, members, cluster) == {"p0": 2, "p1": 2}
        round_robin_starved += len(_per_process(RoundRobinPartitionAssignor, members, cluster)) < 2
    # What it replaces starves a process now and then (2 draws in 70 on average).
    assert round_robin_starved > 0
    for processes, consumers, count in [(3, 4, 4), (4, 1, 4), (2, 3, 5), (3, 2, 12)]:
        members = _members(processes, consumers, ["t"], rng)
        held = _per_process(SpreadAssignor, members, Cluster({"t": count}))
        assert sum(held.values()) == count
        assert max(held.values()) - min(held.values()) <= 1
        assert len(held) == min(processes, count)


def test_each_partition_goes_once_to_a_subscribed_member() -> None:
    rng = random.Random(11)
    members = _members(2, 2, ["a"], rng) | _members(1, 2, ["a", "b"], rng, first=2)
    metadata = {m: meta for m, (_, meta) in members.items()}
    metadata["other-client"] = ConsumerProtocolMemberMetadata(0, ["b"], b"")  # no process
    dealt = SpreadAssignor.assign(Cluster({"a": 6, "b": 3}), metadata)
    assert set(dealt) == set(metadata)
    given = [(t, p, m) for m, a in dealt.items() for t, ps in a.assignment for p in ps]
    assert sorted((t, p) for t, p, _ in given) == [("a", p) for p in range(6)] + [
        ("b", p) for p in range(3)
    ]
    for topic, _, member in given:
        assert topic in metadata[member].subscription
    assert any(m == "other-client" for _, _, m in given)
    # Three processes and the other client: each holds some of what it subscribed to.
    assert {members[m][0] if m in members else m for _, _, m in given} == {
        "p0",
        "p1",
        "p2",
        "other-client",
    }


async def test_members_of_an_older_release_share_the_group_in_either_order(
    infra: Infrastructure,
) -> None:
    """On the real broker: a member offering aiokafka's round robin (a release before the
    spread assignor) and one of this release share a group, whichever came first (a rolling
    update, then a rollback); each holds some partitions, and each partition one of them."""
    for older_first in (True, False):
        await _share(infra.bootstrap, older_first=older_first)


async def _share(bootstrap: str, *, older_first: bool) -> None:
    topic = f"assignor-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    strategies = [(RoundRobinPartitionAssignor,), STRATEGY]
    if not older_first:
        strategies.reverse()
    members = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"group-{topic}",
            partition_assignment_strategy=strategy,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=500,
        )
        for strategy in strategies
    ]
    try:
        for member in members:  # start() returns once the member has joined
            await member.start()

        def held() -> list[set[TopicPartition]]:
            return [member.assignment() for member in members]

        for _ in range(300):  # 60 s
            if all(held()) and len(set().union(*held())) == 4:
                break
            await asyncio.sleep(0.2)
        else:
            raise TimeoutError(f"the group did not share the partitions: {held()}")
        assert sum(len(part) for part in held()) == 4
    finally:
        for member in members:
            await member.stop()


def test_a_just_replaced_process_is_not_dealt_the_same_partition_every_time() -> None:
    """A survivor, a process just killed (its member lingers until its session times out) and
    its replacement, with pids in the order they started: the dead one must not hold the same
    partition in every such rebalance (in host/pid order it held partition 1 each time)."""
    rng = random.Random(5)
    dead_held: Counter[int] = Counter()
    for _ in range(200):
        pids = sorted(rng.sample(range(10_000, 99_999), 3))  # survivor, dead, replacement
        members = {
            f"run-poller-{uuid.UUID(int=rng.getrandbits(128))}": ConsumerProtocolMemberMetadata(
                0, ["results"], f"host/{pid}/{rng.getrandbits(32):08x}".encode()
            )
            for pid in pids
        }
        dead = sorted(members, key=lambda m: members[m].user_data)[1]
        dealt = SpreadAssignor.assign(Cluster({"results": 4}), members)
        for _, partitions in dealt[dead].assignment:
            dead_held.update(partitions)
    # Each partition is the dead member's in about a third of the rounds, none in all.
    assert set(dead_held) == {0, 1, 2, 3}
    assert max(dead_held.values()) < 150
