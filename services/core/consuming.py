"""How every consumer handles a record: decode it, retry within a budget, or dead-letter it.

A record that cannot be decoded goes to `threadbus.dlq` at once: it will never decode. A
record whose handler keeps failing is tried `ATTEMPTS` times with a growing pause, then goes to
`threadbus.dlq` with the error, and the consumer moves on. An outage (Postgres or the broker
unreachable, a restarting server, a serialisation conflict) is not the record's fault: it is
retried for as long as it lasts and never dead-lettered, so an outage loses nothing.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel, ValidationError

from schemas import topics
from schemas.events import DeadLetter
from services.core import metrics, tracing
from services.core.ids import new_id

log = logging.getLogger(__name__)

ATTEMPTS = 5
"""How many times a failing record is handled before it is dead-lettered."""

FIRST_PAUSE_SECONDS = 0.25
LONGEST_PAUSE_SECONDS = 5.0

OUTAGES: tuple[type[Exception], ...] = (
    OSError,  # includes ConnectionError and TimeoutError
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.exceptions.OperatorInterventionError,  # the server is shutting down or starting
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialisation failure, deadlock
)
"""What a lost or busy database or broker raises: retried without limit, never dead-lettered."""

Model = TypeVar("Model", bound=BaseModel)
Value = TypeVar("Value")


class Undecodable(Exception):
    """The record can never be handled: its value is not what the topic carries."""


def json_model(model: type[Model]) -> Callable[[bytes], Model]:
    """A decoder of JSON records into `model`; anything else is `Undecodable` with the reason."""

    def decode(value: bytes) -> Model:
        try:
            return model.model_validate(json.loads(value))
        except (ValueError, RecursionError) as exc:  # ValidationError is a ValueError
            if isinstance(exc, ValidationError):
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()
                )
                raise Undecodable(f"not a valid {model.__name__}: {problems}") from None
            raise Undecodable(f"not JSON: {str(exc) or type(exc).__name__}") from None

    return decode


class Consumer:
    """One subscriber's retry budget and dead letters; attempts are counted per record."""

    def __init__(self, producer: AIOKafkaProducer, group: str) -> None:
        self._producer = producer
        self._group = group
        self._failures: dict[tuple[str, int, int], int] = {}

    async def handle(
        self,
        message: KafkaMessage,
        decode: Callable[[bytes], Value],
        action: Callable[[Value], Awaitable[Any]],
    ) -> None:
        """Decode the record and act on it; raise (to be redelivered) only within the budget."""
        raw = message.raw_message
        assert not isinstance(raw, tuple)  # single-record subscribers only
        where = (raw.topic, raw.partition, raw.offset)
        value = raw.value or b""
        try:
            decoded = decode(value)
        except Undecodable as exc:
            await self._dead_letter(raw, value, str(exc), attempts=1)
            return
        try:
            with tracing.consumer_span(raw.topic, raw.headers):
                await action(decoded)
        except OUTAGES as exc:
            failures = self._failures[where] = self._failures.get(where, 0) + 1
            log.warning(
                "%s: %s at %s/%d@%d; retrying (attempt %d)", self._group,
                _describe(exc), *where, failures,
            )  # fmt: skip
            await asyncio.sleep(_pause(failures))
            raise
        except Exception as exc:
            failures = self._failures[where] = self._failures.get(where, 0) + 1
            log.exception(
                "%s failed on %s/%d@%d (attempt %d of %d)", self._group, *where, failures, ATTEMPTS
            )
            if failures < ATTEMPTS:
                await asyncio.sleep(_pause(failures))
                raise
            await self._dead_letter(raw, value, f"the handler failed: {_describe(exc)}", failures)
        self._failures.pop(where, None)

    async def handle_batch(
        self,
        message: KafkaMessage,
        decode: Callable[[bytes], Value],
        action: Callable[[list[Value]], Awaitable[Any]],
    ) -> None:
        """Decode a batch of records and act on them together; the offsets commit once.

        Records that do not decode are dead-lettered. When the action fails for a reason other
        than an outage, the records are tried one at a time, each within its own budget, so
        one bad record is dead-lettered and the rest go through. An outage raises: the whole
        batch comes back (the action must be idempotent).
        """
        records = message.raw_message
        assert isinstance(records, tuple)  # batch subscribers only
        decoded: list[tuple[Any, Value]] = []
        undecodable: list[tuple[Any, str]] = []
        for raw in records:
            try:
                decoded.append((raw, decode(raw.value or b"")))
            except Undecodable as exc:
                undecodable.append((raw, str(exc)))
        try:
            if decoded:
                with tracing.batch_span(records[0].topic, [raw.headers for raw, _ in decoded]):
                    await action([value for _, value in decoded])
        except OUTAGES as exc:
            log.warning("%s: %s on a batch of %d; retrying", self._group, _describe(exc),
                        len(records))  # fmt: skip
            await asyncio.sleep(FIRST_PAUSE_SECONDS)
            raise
        except Exception:
            log.warning("%s: a batch of %d failed; handling its records one at a time",
                        self._group, len(decoded), exc_info=True)  # fmt: skip
            for raw, value in decoded:
                await self._one_of_batch(raw, value, action)
        for raw, reason in undecodable:
            await self._dead_letter(raw, raw.value or b"", reason, attempts=1)

    async def _one_of_batch(
        self, raw: Any, value: Value, action: Callable[[list[Value]], Awaitable[Any]]
    ) -> None:
        """One record of a failed batch: its own budget, then the DLQ (outages raise)."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await action([value])
                return
            except OUTAGES:
                raise
            except Exception as exc:
                log.exception("%s failed on %s/%d@%d (attempt %d of %d)", self._group,
                              raw.topic, raw.partition, raw.offset, attempt, ATTEMPTS)  # fmt: skip
                if attempt == ATTEMPTS:
                    reason = f"the handler failed: {_describe(exc)}"
                    await self._dead_letter(raw, raw.value or b"", reason, attempt)
                    return
                await asyncio.sleep(_pause(attempt))

    async def _dead_letter(self, raw: Any, value: bytes, reason: str, attempts: int) -> None:
        """Park the record on `threadbus.dlq`; if even that fails, the record comes back."""
        text = value.decode("utf-8", errors="replace")
        event_id = _event_id(text)
        letter = DeadLetter(
            id=new_id("dlq"),
            reason=reason,
            event_id=event_id,
            consumer=self._group,
            attempts=attempts,
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key.decode("utf-8", errors="replace") if raw.key else None,
            value=text,
            failed_at=datetime.now(UTC),
        )
        await self._producer.send_and_wait(
            topics.DLQ, letter.model_dump_json().encode(), key=raw.key
        )
        self._failures.pop((raw.topic, raw.partition, raw.offset), None)
        metrics.DEAD_LETTERS.labels(self._group).inc()
        log.error(
            "%s dead-lettered %s/%d@%d: %s", self._group, raw.topic, raw.partition, raw.offset,
            reason,
        )  # fmt: skip


def _pause(failures: int) -> float:
    return float(min(FIRST_PAUSE_SECONDS * 2 ** (failures - 1), LONGEST_PAUSE_SECONDS))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _event_id(text: str) -> str | None:
    """The record's event id, when it is a JSON object that has one (for the DLQ entry)."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return None
    event_id = payload.get("id") if isinstance(payload, dict) else None
    return event_id if isinstance(event_id, str) else None
