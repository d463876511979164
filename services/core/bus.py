"""Kafka with safe defaults: producers, FastStream brokers, subscriber options, topics."""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from schemas import topics

log = logging.getLogger(__name__)

MAX_POLL_INTERVAL_MS = 15 * 60 * 1000
"""Longer than any handler may take: handlers claim and hand long work to tasks."""

FETCH_MAX_WAIT_MS = 100
"""How long a fetch may wait for data. Some Kafka-protocol brokers (Tansu) hold a fetch this
long even when records are ready, which adds up over the hops of a run; 100 ms keeps the
latency low at the cost of a few more idle fetches."""


def make_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; no idempotence (brokers vary)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        request_timeout_ms=30_000,
    )


def make_broker(bootstrap: str, client_id: str) -> KafkaBroker:
    """A FastStream broker whose publishers wait for all in-sync replicas."""
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        graceful_timeout=15.0,
        logger=logging.getLogger(f"threadbus.{client_id}"),
    )


REDELIVERY_DELAY_SECONDS = 1.0

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def redeliver_on_failure(handler: Handler) -> Handler:
    """A handler that raises gets its record again, a second later (never lost, never hot).

    Handlers turn bad input into DLQ entries or error outputs themselves; what reaches here is
    a lost database or broker (or a bug): the record is not committed, and the pause keeps a
    persistent failure from spinning.
    """

    @functools.wraps(handler)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except Exception:
            log.exception("%s failed; the record will be delivered again", handler.__name__)
            await asyncio.sleep(REDELIVERY_DELAY_SECONDS)
            raise

    return guarded  # type: ignore[return-value]


def subscriber_options(group_id: str) -> dict[str, Any]:
    """Explicit, at-least-once consumer settings for every subscriber.

    Commit only after the handler returned, and seek back when it raised (NACK_ON_ERROR; pair
    it with `redeliver_on_failure`), start from the earliest offset for a new group, and allow
    a long poll interval because a handler never holds long work.
    """
    return {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "max_poll_interval_ms": MAX_POLL_INTERVAL_MS,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    }


async def create_topics(bootstrap: str, partitions: int, *, attempts: int = 60) -> list[str]:
    """Create every Threadbus topic that is missing; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="threadbus-admin")
    for attempt in range(attempts):
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.ALL if t not in existing]
        for name in missing:
            try:
                await admin.create_topics([NewTopic(name, partitions, 1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    for name in created:
        log.info("created topic %s with %d partitions", name, partitions)
    return created
