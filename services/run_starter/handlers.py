"""run-starter subscriber: `threadbus.inbound` (the decorator is the topology)."""

from typing import Annotated

from faststream import Context
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage

from schemas import topics
from services.core import bus
from services.core.runtime import Runtime
from services.run_starter.intake import Record, accept

router = KafkaRouter()

RuntimeDep = Annotated[Runtime, Context("runtime")]


@router.subscriber(topics.INBOUND, **bus.subscriber_options(topics.GROUP_RUN_STARTER))
@bus.redeliver_on_failure
async def on_inbound(message: KafkaMessage, runtime: RuntimeDep) -> None:
    """Apply one inbound CloudEvent; bad ones go to the DLQ. The offset commits after commit."""
    raw = message.raw_message
    assert not isinstance(raw, tuple)  # a single-record subscriber, not a batch one
    key = raw.key.decode("utf-8", errors="replace") if raw.key else None
    record = Record(
        value=message.body, topic=raw.topic, partition=raw.partition, offset=raw.offset, key=key
    )
    await accept(runtime.pool, record, expires_seconds=runtime.settings.run_expires_seconds)
