"""Kafka from a test's point of view: publish inbound CloudEvents, watch outbound topics."""

import asyncio
import contextlib
import json
import threading
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from schemas import topics


class KafkaTap:
    """A background consumer of `threadbus.events` and `threadbus.dlq`, and a producer."""

    def __init__(self, bootstrap: str):
        self._bootstrap = bootstrap
        self._records: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._producer: AIOKafkaProducer | None = None
        self._consumer_task: Any = None

    def start(self) -> "KafkaTap":
        """Connect, and wait until the consumer has its partitions."""
        self._thread.start()
        self._call(self._start())
        if not self._ready.wait(60):
            raise TimeoutError("the test consumer got no partitions")
        return self

    def stop(self) -> None:
        """Disconnect and end the thread."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self._call(self._close(), timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def publish(
        self,
        value: dict[str, Any] | bytes,
        key: str | None,
        topic: str = topics.INBOUND,
        headers: dict[str, str] | None = None,
    ) -> RecordMetadata:
        """Send one record (to `threadbus.inbound` unless told) and wait for the broker's ack;
        returns where it landed."""
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        assert self._producer is not None
        sent = self._producer.send_and_wait(
            topic, raw, key=key.encode() if key else None,
            headers=[(name, value.encode()) for name, value in (headers or {}).items()] or None,
        )  # fmt: skip
        metadata: RecordMetadata = self._call(sent)
        return metadata

    def publish_many(
        self, records: list[tuple[dict[str, Any], str, dict[str, str]]], topic: str
    ) -> None:
        """Send (value, key, headers) records together, so they land within one fetch of a
        consumer that batches, and wait for the broker's acks."""
        assert self._producer is not None
        producer = self._producer

        async def send_all() -> None:
            sent = [await producer.send(
                topic, json.dumps(value).encode(), key=key.encode(),
                headers=[(name, text.encode()) for name, text in headers.items()],
            ) for value, key, headers in records]  # fmt: skip
            await asyncio.gather(*sent)

        self._call(send_all())

    def events(self, subject: str | None = None) -> list[dict[str, Any]]:
        """Outbound events seen so far, optionally only one thread's."""
        with self._lock:
            return [
                v
                for t, v in self._records
                if t == topics.EVENTS and (subject is None or v.get("subject") == subject)
            ]

    def dead_letters(self) -> list[dict[str, Any]]:
        """DLQ entries seen so far."""
        with self._lock:
            return [v for t, v in self._records if t == topics.DLQ]

    def _call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await self._producer.start()
        consumer = AIOKafkaConsumer(
            topics.EVENTS,
            topics.DLQ,
            bootstrap_servers=self._bootstrap,
            group_id=f"test-tap-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer_task = asyncio.ensure_future(self._consume(consumer))

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                if consumer.assignment():
                    self._ready.set()
                for records in batch.values():
                    with self._lock:
                        self._records += [(r.topic, _decoded(r.value)) for r in records]
        finally:
            await consumer.stop()

    async def _close(self) -> None:
        if self._consumer_task is not None:
            await self._consumer_task
        if self._producer is not None:
            await self._producer.stop()


def _decoded(value: bytes) -> dict[str, Any]:
    """A record's JSON object; a test may publish other bytes, kept as `{"undecodable": ...}`."""
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        decoded = None
    return decoded if isinstance(decoded, dict) else {"undecodable": value[:200]}


def user_message(thread_id: str, assistant_id: str, content: str, **data: Any) -> dict[str, Any]:
    """A `threadbus.user_message` CloudEvent with a fresh id."""
    return {
        "specversion": "1.0",
        "id": f"test-{uuid.uuid4().hex}",
        "source": "tests",
        "type": "threadbus.user_message",
        "subject": thread_id,
        "data": {"assistant_id": assistant_id, "content": content, **data},
    }
