"""Offsets committed together: one offset commit for the records of a short while, instead of
one per record, for consumers whose handlers are idempotent.

A record's offset is only ever committed after its handler returned, as before; what changes
is when. A process that stops (or crashes) before the next commit leaves the offsets of up to
`interval` of handled records uncommitted, and whoever consumes the partition next handles
them again: harmless where the handler records what it has seen in the transaction of its
effects (the run-starter's `processed_events`), and what at-least-once delivery already
allowed for a crash between a handler's commit and its offset's.
"""

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faststream.kafka.message import KafkaMessage
from faststream.message import AckStatus

log = logging.getLogger(__name__)


COMMIT_TIMEOUT_SECONDS = 5.0
"""How long one commit may take (aiokafka retries a retriable failure for as long as the
coordinator is away): then its offsets are dropped like those of a refused commit."""


class LaterCommits:
    """The handled records' offsets of one subscriber, committed at most every `interval`
    seconds, and for the partitions a rebalance takes away before it does (`revoked`)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._pending: dict[AIOKafkaConsumer, dict[TopicPartition, int]] = {}
        self._timer: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def handled(self, message: KafkaMessage) -> None:
        """The handler of this record returned: commit its offset with the next batch (and not
        at once: FastStream's acknowledgement after the handler then commits nothing)."""
        raw = message.raw_message
        assert not isinstance(raw, tuple)  # single-record subscribers only
        consumer = message.consumer
        assert isinstance(consumer, AIOKafkaConsumer)
        offsets = self._pending.setdefault(consumer, {})
        offsets[TopicPartition(raw.topic, raw.partition)] = raw.offset + 1
        message.committed = AckStatus.ACKED
        if self._timer is None:
            self._timer = asyncio.create_task(self._commit_soon(), name="later commits")
            self._running.add(self._timer)
            self._timer.add_done_callback(self._running.discard)

    async def _commit_soon(self) -> None:
        try:
            await asyncio.sleep(self.interval)
        finally:
            self._timer = None  # what is handled from now on waits for the next timer
        await self.commit()

    async def commit(self, only: list[TopicPartition] | None = None) -> None:
        """Commit what is pending (of the partitions `only`, if given) of the partitions each
        consumer still holds. A commit that fails or takes longer than
        `COMMIT_TIMEOUT_SECONDS` is dropped, not retried, as are the offsets of partitions a
        rebalance took: their records are handled again by the partition's next consumer,
        which the handler's idempotence makes harmless, and a later commit covers them."""
        for consumer, offsets in list(self._pending.items()):
            chosen = {tp: o for tp, o in offsets.items() if only is None or tp in only}
            if not chosen:
                continue
            for tp in chosen:
                del offsets[tp]
            if not offsets:
                del self._pending[consumer]
            held = consumer.assignment()
            chosen = {tp: o for tp, o in chosen.items() if tp in held}
            if not chosen:
                continue
            try:
                await asyncio.wait_for(consumer.commit(chosen), COMMIT_TIMEOUT_SECONDS)
            except (KafkaError, TimeoutError) as exc:
                log.info("offsets %s not committed (%s); their records come again", chosen, exc)

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        """A rebalance takes these partitions: commit their offsets while they are ours."""
        await self.commit(only=partitions)
