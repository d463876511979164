"""message-archiver subscriber: `threadbus.events` (the decorator is the topology)."""

import json
import logging
from typing import Annotated, Any

from faststream import Context
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage

from schemas import topics
from services.core import bus
from services.core.consuming import Undecodable
from services.core.runtime import Runtime
from services.core.store import archive

log = logging.getLogger(__name__)

router = KafkaRouter()

RuntimeDep = Annotated[Runtime, Context("runtime")]


def decode_event(value: bytes) -> dict[str, Any]:
    """An outbound event: a JSON object with a string `id` and `type`."""
    try:
        event = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise Undecodable(f"not JSON: {exc}") from None
    if not isinstance(event, dict) or not all(
        isinstance(event.get(name), str) for name in ("id", "type")
    ):
        raise Undecodable("not a valid Threadbus event: it needs a string `id` and `type`")
    return event


@router.subscriber(topics.EVENTS, **bus.subscriber_options(topics.GROUP_MESSAGE_ARCHIVER))
async def on_event(message: KafkaMessage, runtime: RuntimeDep) -> None:
    """Append the event to its thread's archive; a redelivered event is stored once."""

    async def append(event: dict[str, Any]) -> None:
        async with runtime.pool.acquire() as conn:
            if not await archive.append(conn, event):
                log.debug("event %s (%s) archived before", event["id"], event["type"])

    await runtime.consumer(topics.GROUP_MESSAGE_ARCHIVER).handle(message, decode_event, append)
