"""message-archiver subscriber: `threadbus.events` (the decorator is the topology)."""

import json
import logging
from typing import Annotated

from faststream import Context
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage

from schemas import topics
from services.core import bus
from services.core.runtime import Runtime
from services.core.store import archive

log = logging.getLogger(__name__)

router = KafkaRouter()

RuntimeDep = Annotated[Runtime, Context("runtime")]


@router.subscriber(topics.EVENTS, **bus.subscriber_options(topics.GROUP_MESSAGE_ARCHIVER))
@bus.redeliver_on_failure
async def on_event(message: KafkaMessage, runtime: RuntimeDep) -> None:
    """Append the event to its thread's archive; a redelivered event is stored once."""
    try:
        event = json.loads(message.body)
        event_id, event_type = event["id"], event["type"]
    except (ValueError, KeyError, TypeError) as exc:
        # Only Threadbus writes this topic; a record without id/type is logged and skipped.
        raw = message.raw_message
        offset = None if isinstance(raw, tuple) else raw.offset
        log.error("unarchivable record at offset %s: %s", offset, exc)
        return
    async with runtime.pool.acquire() as conn:
        if not await archive.append(conn, event):
            log.debug("event %s (%s) archived before", event_id, event_type)
