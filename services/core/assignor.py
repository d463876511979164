"""A partition assignor that spreads a group's partitions over its processes first.

A tool-executor runs several consumers in one process (`workers`), all with the same client
id, so the broker names them `tool-executor-<uuid>`. Kafka's round-robin assignor deals the
partitions over the member ids in sorted order: with four partitions and two processes of
four consumers each, the first four ids in that order all belong to one process in 2 of 70
draws, and the other process then gets nothing until the next rebalance. Scaling the
executors out would not spread their work.

Here each member says which process it is in (the member metadata's user data), and the
partitions are dealt over the processes in turn: the first consumer of every process, then
the second of every process, and so on, the processes taken in the order of a hash of their
identity (not their age; see `assign`). With one subscribed topic, as every Threadbus group
has, each process gets its share whenever there are at least as many partitions as
processes, and within a process they go to different consumers.

It is offered under round robin's protocol name, `roundrobin`, and is the only assignor
offered. Whichever member the broker makes the group's leader deals the partitions, and both
deal a valid assignment in the same format (round robin ignores the user data), so members of
an older release that offer round robin, during a rolling update or after a rollback, share a
group with these in either order. Offering a second assignor instead would cost every join two
JoinGroup requests (aiokafka sends one per assignor it adds, aio-libs/aiokafka#1168; on Kafka
that is a second rebalance), and the embedded broker keeps a group's first protocol for as
long as it runs and refuses members that do not offer it.
"""

import itertools
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from hashlib import sha256

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger(__name__)

PROCESS = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}".encode()
"""This process, as its consumers tell the group (the uuid: a pid can recur in a new pod)."""


class SpreadAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Deal partitions over processes in turn, then over each process's consumers."""

    name = "roundrobin"  # see the module's docstring
    version = 0

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        """Every partition of the subscribed topics, to a member subscribed to its topic."""
        by_process: dict[bytes, list[str]] = defaultdict(list)
        for member_id in sorted(members):
            # A member without user data (another client) counts as a process of its own.
            by_process[members[member_id].user_data or member_id.encode()].append(member_id)
        # Processes in an order that has nothing to do with their age: in host/pid order the
        # second-oldest process got the second partition, and when a process has just been
        # killed and replaced (its member lingers for a session timeout) that is the dead one,
        # rebalance after rebalance (a chaos test saw a partition unread for four minutes).
        columns = [by_process[p] for p in sorted(by_process, key=lambda p: sha256(p).digest())]
        order = [
            member
            for row in itertools.zip_longest(*columns)
            for member in row
            if member is not None
        ]
        topics = sorted({topic for m in members.values() for topic in m.subscription})
        dealt: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        turn = 0
        for topic in topics:
            subscribed = [m for m in order if topic in members[m].subscription]
            partitions = cluster.partitions_for_topic(topic)
            if partitions is None:
                log.warning("no partition metadata for topic %s", topic)
                continue
            for partition in sorted(partitions):
                # `turn` runs on across topics, so single-partition topics spread too.
                member = subscribed[turn % len(subscribed)]
                dealt[member][topic].append(partition)
                turn += 1
        return {
            member_id: ConsumerProtocolMemberAssignment(
                cls.version, sorted(dealt[member_id].items()), b""
            )
            for member_id in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        """The subscription, and this process in the user data."""
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), PROCESS)

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        """Nothing is kept between assignments."""


STRATEGY: tuple[type[AbstractPartitionAssignor], ...] = (SpreadAssignor,)
"""What every consumer offers its group."""
