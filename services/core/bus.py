"""Kafka with safe defaults: producers, FastStream brokers, subscriber options, topics."""

import asyncio
import functools
import logging
import ssl
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from faststream.message import StreamMessage
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import topics
from services.core import assignor
from services.core.commits import LaterCommits

log = logging.getLogger(__name__)

MAX_POLL_INTERVAL_MS = 15 * 60 * 1000
"""Longer than any handler may take: handlers claim and hand long work to tasks."""

FETCH_MAX_WAIT_MS = 100
"""How long a fetch of a consumer a run may wait on (tool calls and their results) may wait
for data."""

BACKGROUND_FETCH_WAIT_MS = 500
"""How long a fetch of a consumer no run waits on (the archive, ingestion orders that only wake
a pull loop, wake-up hints that NOTIFY also carries) may wait: each idle fetch costs the
embedded broker about 0.7 ms of CPU (measured: 105 ms/s for 150 idle fetches a second)."""


class KafkaFetch(BaseSettings):
    """How long a fetch on the hot path may wait (`THREADBUS_KAFKA_FETCH_WAIT_MS`).

    The embedded broker (Tansu) answers a waiting fetch late when a record arrives during the
    wait (measured on loopback: p50 20 ms, p90 50 ms at a 100 ms wait; p50 3.7 ms, p90 9.7 ms
    at 20 ms; p50 2.8 ms at 5 ms). So the consumers that start a run (inbound events) and the
    API's stream readers wait briefly and fetch again, at the price of about 50 fetches a
    second each while idle. A Kafka broker answers as soon as data arrives: there, set 500.
    """

    model_config = SettingsConfigDict(env_prefix="THREADBUS_KAFKA_", env_file=".env",
                                      extra="ignore")  # fmt: skip

    fetch_wait_ms: int = Field(default=20, ge=0, le=30_000)


@functools.cache
def urgent_fetch_wait_ms() -> int:
    """The fetch wait of hot-path consumers in this process."""
    return KafkaFetch().fetch_wait_ms


class KafkaSecurity(BaseSettings):
    """How every Kafka client of this process authenticates: TLS and SASL (PLAIN or SCRAM).

    Read from the environment (`THREADBUS_KAFKA_*`; on Kubernetes the password and keys come
    from the Secret) by every client the process makes: producers, consumers, the FastStream
    broker, stream readers and the admin client.
    """

    model_config = SettingsConfigDict(env_prefix="THREADBUS_KAFKA_", env_file=".env",
                                      extra="ignore")  # fmt: skip

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str | None = Field(default=None, description="CA bundle; unset: the system's.")
    ssl_certfile: str | None = Field(default=None, description="Client certificate (mTLS).")
    ssl_keyfile: str | None = Field(default=None, description="Its private key (mTLS).")

    def faststream(self) -> BaseSecurity | None:
        """The same, as a FastStream broker takes it."""
        use_ssl = self.security_protocol in ("SSL", "SASL_SSL")
        context = self._ssl_context() if use_ssl else None
        if self.security_protocol in ("PLAINTEXT", "SSL"):
            return BaseSecurity(ssl_context=context, use_ssl=True) if use_ssl else None
        sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256,
                "SCRAM-SHA-512": SASLScram512}[self.sasl_mechanism]  # fmt: skip
        return sasl(
            username=self.sasl_username,
            password=self.sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=use_ssl,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            named = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
            files = ", ".join(f for f in named if f)
            raise ValueError(
                f"Kafka TLS files unusable ({files}): {exc}; check THREADBUS_KAFKA_SSL_CAFILE,"
                " THREADBUS_KAFKA_SSL_CERTFILE and THREADBUS_KAFKA_SSL_KEYFILE"
            ) from exc
        return context


@functools.cache
def security() -> KafkaSecurity:
    """This process's Kafka security settings."""
    return KafkaSecurity()


def client_options() -> dict[str, Any]:
    """The security keyword arguments of an aiokafka client (none for PLAINTEXT)."""
    return parse_security(security().faststream())


def make_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas; no idempotence (brokers vary)."""
    return AIOKafkaProducer(
        **client_options(),
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=0,  # the relay hands a whole batch over before the sender runs
        request_timeout_ms=30_000,
    )


async def learn_topics(producer: AIOKafkaProducer) -> None:
    """Fetch every topic's partitions now, so that the first record sent to each does not wait
    for a metadata round trip (it made the first run after start-up slower than the next)."""
    for topic in topics.ALL:
        try:
            await asyncio.wait_for(producer.partitions_for(topic), 5)
        except (KafkaError, TimeoutError) as exc:
            log.warning("no metadata for %s yet: %s", topic, exc)


def make_broker(bootstrap: str, client_id: str) -> KafkaBroker:
    """A FastStream broker whose publishers wait for all in-sync replicas.

    No dependency injection (`apply_types=False`): a handler gets the message itself (the
    decoder below) and takes what else it needs from `runtime` slots.
    """
    return KafkaBroker(
        bootstrap,
        apply_types=False,
        security=security().faststream(),
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        graceful_timeout=15.0,
        logger=logging.getLogger(f"threadbus.{client_id}"),
    )


class Membership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether a subscriber's consumers have joined their group: until then, nothing they are
    sent is handled, so the process is not ready."""

    def __init__(self, later: LaterCommits | None = None) -> None:
        self.joined = False
        self._later = later

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit the handled records' offsets still pending for these partitions (offsets
        are otherwise committed per record, when the handler returns)."""
        if self._later is not None:
            await self._later.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:  # noqa: ARG002
        """Joined (an empty assignment counts: more consumers than partitions)."""
        self.joined = True
        JOINED.set()


MEMBERSHIPS: list[Membership] = []
"""One per subscriber declared in this process (`subscriber_options` registers them)."""

JOINED = asyncio.Event()
"""Set whenever a consumer joins its group (wakes the heartbeat, so readiness shows at once)."""


def consuming() -> bool:
    """Every subscriber of this process has joined its group (true when there are none)."""
    return all(membership.joined for membership in MEMBERSHIPS)


def subscriber_options(
    group_id: str,
    *,
    urgent: bool = False,
    background: bool = False,
    later: LaterCommits | None = None,
) -> dict[str, Any]:
    """Explicit, at-least-once consumer settings for every subscriber.

    Commit only after the handler returned, and seek back when it raised (NACK_ON_ERROR; the
    handler goes through `consuming.Consumer`, which pauses first and bounds the attempts),
    start from the earliest offset for a new group, and allow a long poll interval because a
    handler never holds long work. An `urgent` consumer (a run waits on it) fetches with the
    short wait of `KafkaFetch`; a `background` one (nothing waits on it) the long
    `BACKGROUND_FETCH_WAIT_MS`. Partitions are spread over the group's processes before their
    consumers (`assignor.SpreadAssignor`). With `later`, the handler hands each handled record
    to it (`LaterCommits.handled`) and its offsets commit together; a rebalance commits them
    for the partitions it takes first.
    """
    wait = FETCH_MAX_WAIT_MS
    if urgent:
        wait = urgent_fetch_wait_ms()
    elif background:
        wait = BACKGROUND_FETCH_WAIT_MS
    return {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "max_poll_interval_ms": MAX_POLL_INTERVAL_MS,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "fetch_max_wait_ms": wait,
        "partition_assignment_strategy": assignor.STRATEGY,
        "decoder": _the_message,
        "listener": _membership(later),
    }


def _membership(later: LaterCommits | None) -> Membership:
    membership = Membership(later)
    MEMBERSHIPS.append(membership)
    return membership


async def _the_message(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """No decoding by FastStream: the handler gets the message, and `consuming.Consumer`
    decodes and dead-letters what fails.

    (FastStream's own JSON decoding raises on deeply nested input before any handler runs,
    and the record would come back for ever.)
    """
    return message


async def create_topics(bootstrap: str, partitions: int, *, attempts: int = 60) -> list[str]:
    """Create every Threadbus topic that is missing; returns the ones created."""
    admin = AIOKafkaAdminClient(
        **client_options(), bootstrap_servers=bootstrap, client_id="threadbus-admin"
    )
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
