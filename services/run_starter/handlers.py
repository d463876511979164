"""run-starter subscriber: `threadbus.inbound` (the decorator is the topology)."""

from faststream.kafka import KafkaRouter
from faststream.kafka.message import KafkaMessage

from schemas import topics
from services.core import bus
from services.core.commits import LaterCommits
from services.core.runtime import RUNTIME
from services.run_starter.intake import Record, accept

router = KafkaRouter()
COMMITS = LaterCommits(interval=0.1)
"""The inbound events' offsets, committed together (`app` sets the interval from settings)."""


@router.subscriber(
    topics.INBOUND,
    **bus.subscriber_options(topics.GROUP_RUN_STARTER, urgent=True, later=COMMITS),
)
async def on_inbound(message: KafkaMessage) -> None:
    """Apply one inbound CloudEvent; bad ones go to the DLQ. The offset commits after the
    event's transaction, with the others of its interval (`COMMITS`)."""
    runtime = RUNTIME.get()
    raw = message.raw_message
    assert not isinstance(raw, tuple)  # a single-record subscriber, not a batch one

    async def apply(value: bytes) -> None:
        record = Record(
            value=value,
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key.decode("utf-8", errors="replace") if raw.key else None,
        )
        await accept(runtime.pool, record, expires_seconds=runtime.settings.run_expires_seconds)

    # `accept` parks invalid events itself (with an `error` event); the consumer's budget is
    # for the failures it does not expect.
    await runtime.consumer(topics.GROUP_RUN_STARTER).handle(message, bytes, apply)
    COMMITS.handled(message)  # not reached when `handle` raises: the record comes again
