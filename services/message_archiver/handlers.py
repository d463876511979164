"""message-archiver subscriber: `threadbus.events` (the decorator is the topology)."""

import json
import logging
from typing import Any

from faststream.kafka import KafkaRouter
from faststream.kafka.message import KafkaMessage

from schemas import topics
from services.core import bus
from services.core.consuming import Undecodable
from services.core.runtime import RUNTIME
from services.core.store import archive

log = logging.getLogger(__name__)

router = KafkaRouter()

BATCH = 500
"""Events archived per statement (and per offset commit) at most: a run makes about a dozen,
and one round trip each was the archiver's whole cost."""

FETCH_MIN_BYTES = 256 * 1024
"""A fetch waits (up to the background wait, 500 ms) for this much: nothing waits on the
archive, and under load every fetch, statement and offset commit the archiver saves is CPU the
runs get (the embedded broker charges about a millisecond a fetch that returns records)."""


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


@router.subscriber(
    topics.EVENTS,
    batch=True,
    max_records=BATCH,
    fetch_min_bytes=FETCH_MIN_BYTES,
    **bus.subscriber_options(topics.GROUP_MESSAGE_ARCHIVER, background=True),
)
async def on_events(message: KafkaMessage) -> None:
    """Append a batch of events to their threads' archives in one statement; the offsets
    commit once per batch. A redelivered event is stored once."""

    runtime = RUNTIME.get()

    async def append(events: list[dict[str, Any]]) -> None:
        async with runtime.pool.acquire() as conn:
            stored = await archive.append_many(conn, events)
        if stored < len(events):
            log.debug("%d of %d events archived before", len(events) - stored, len(events))

    await runtime.consumer(topics.GROUP_MESSAGE_ARCHIVER).handle_batch(
        message, decode_event, append
    )
