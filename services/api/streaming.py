"""Server-sent events of one run, read from `threadbus.events`: any API replica serves any run.

A stream reads the partition of the run's thread (the relay keys every event by thread id)
and keeps the events whose `runid` is the run's. Each SSE `id` is `<partition>-<offset>`, so a
client that reconnects with `Last-Event-ID` resumes exactly after the last event it saw.
"""

import asyncio
import collections
import contextlib
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from schemas import topics
from schemas.runs import Run
from services.api import limits
from services.api.bell import BELL, Bell
from services.api.routes import out
from services.core import bus, metrics
from services.core.outbox import DROPPED, OUTBOX_ID_HEADER, high_water

log = logging.getLogger(__name__)

ENDS_STREAM = {
    "thread.run.completed",
    "thread.run.failed",
    "thread.run.cancelled",
    "thread.run.expired",
    "thread.run.incomplete",
    "thread.run.requires_action",
}
KEEPALIVE_SECONDS = 15.0
IDLE_SECONDS = 1.0
ANCHOR_WAIT_MS = 5000
"""How long a resumed stream waits for the record it resumes from before taking it as lost."""
FETCH_WAIT_MS = 2
"""A stream's fetch wait. It fetches only when rung (a record is on its way) and for a look now
and then, so a short wait costs little; and the embedded broker answers a waiting fetch late,
about a quarter of the wait after the record arrives."""
PEEK_MS = 5
"""How long a sleeping stream's look waits for records."""
UNRUNG_SECONDS = 0.02
"""How long a stream sleeps between looks while rings may be missed (the bell is not listening
yet, or again): it polls as often as it did before the bell."""
RING_SECONDS = 2.0
"""How long a ring keeps a stream fetching when its record does not come (its row was deleted
with its thread, or a relay failover delays it): after that the looks find it."""
DONE = b"event: done\ndata: [DONE]\n\n"
Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def error_frame(message: str) -> bytes:
    """An `error` event the SDK raises on (reference 5.6)."""
    error = {"code": "server_error", "message": message, "param": None, "type": "server_error"}
    # Spec-shaped for raw consumers, plus an "error" key, which makes every SDK version raise.
    return b"event: error\ndata: " + json.dumps({**error, "error": error}).encode() + b"\n\n"


class RunStream:
    """One client's view of one run's events.

    The reader fetches only while records are coming: the bell rings it with the outbox id of
    each commit of its thread's events, and it fetches until that record arrives, then pauses
    its consumer until the next ring (see `services.api.bell`).
    """

    def __init__(self, bootstrap: str, bell: Bell = BELL):
        self._consumer = AIOKafkaConsumer(
            **bus.client_options(),
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        self._started = False
        self._release = limits.claim_stream()
        weakref.finalize(self, self._release)  # also when the response never started
        self._bell = bell
        self._thread: str | None = None
        self._tp: TopicPartition | None = None
        self._rung: dict[int, float] = {}
        """Outbox ids rung for and not yet read, with when they were rung."""
        self._read_ids: collections.deque[int] = collections.deque(maxlen=256)
        """The last outbox ids read: a ring that comes after its record (the process read
        the fetch before the notification) must not keep the reader awake."""
        self._ringing = asyncio.Event()
        self._caught_up = False
        """Whether the reader has reached the partition's end once: before that, it reads on."""

    async def open_at_end(self, thread_id: str) -> None:
        """Start at the end of the thread's partition: what is published from now on."""
        partition = await self._open(thread_id)
        tp = TopicPartition(topics.EVENTS, partition)
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)  # resolve "the end" now, before the run is written
        self._listen(thread_id, tp)  # before the run is written, so its first commit rings
        self._caught_up = True

    async def open_at(
        self, thread_id: str, partition: int, offset: int, run_id: str, *, after: bool
    ) -> None:
        """Start at the run's record at `offset` (or just `after` it), or at the partition's
        start if that record is not the run's any more: a broker that lost its log (the
        embedded in-memory one after a restart) numbers records from 0 again.

        The record itself is read to tell, because the end offset cannot: Tansu reports the
        base offset of the last batch plus one, short of the real end.
        """
        await self._open(None)
        tp = TopicPartition(topics.EVENTS, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, offset)
        batch = await self._consumer.getmany(tp, timeout_ms=ANCHOR_WAIT_MS, max_records=1)
        found = batch.get(tp, [])
        if (
            found
            and found[0].offset == offset
            and (_decode(found[0].value) or {}).get("runid") == run_id
        ):
            self._consumer.seek(tp, offset + 1 if after else offset)
        else:
            log.info("run %s: its record at %d-%d is gone; reading from the start",
                     run_id, partition, offset)  # fmt: skip
            self._consumer.seek(tp, 0)
        self._listen(thread_id, tp)

    def _listen(self, thread_id: str, tp: TopicPartition) -> None:
        self._thread, self._tp = thread_id, tp
        self._bell.join(thread_id, self._on_ring)

    def _on_ring(self, outbox_id: int) -> None:
        if outbox_id not in self._read_ids:
            self._rung[outbox_id] = time.monotonic()
            self._ringing.set()

    def _may_sleep(self) -> bool:
        """Whether every rung record was read (rings older than RING_SECONDS aside)."""
        if not self._caught_up or self._tp is None:
            return False
        if self._rung:
            stale = time.monotonic() - RING_SECONDS
            self._rung = {rung: at for rung, at in self._rung.items() if at > stale}
        return not self._rung

    async def _next_batch(self) -> Batch:
        """The partition's next records, or none after about IDLE_SECONDS (or UNRUNG_SECONDS,
        while rings may be missed)."""
        if self._may_sleep():
            assert self._tp is not None
            self._consumer.pause(self._tp)
            metrics.SLEEPING_STREAMS.inc()
            sleep = IDLE_SECONDS if self._bell.trusted() else UNRUNG_SECONDS
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ringing.wait(), sleep)
            finally:
                metrics.SLEEPING_STREAMS.dec()
                self._consumer.resume(self._tp)
            if not self._ringing.is_set():  # look, for what no ring announced
                metrics.STREAM_WAKES.labels("look").inc()
                return await self._read(PEEK_MS)
            metrics.STREAM_WAKES.labels("ring").inc()
        self._ringing.clear()
        return await self._read(int(IDLE_SECONDS * 1000))

    async def _read(self, timeout_ms: int) -> Batch:
        batch: Batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        if not batch:
            self._caught_up = True
        for tp, records in batch.items():
            for record in records:
                outbox_id = _outbox_id(record.headers)
                self._rung.pop(outbox_id, None)
                self._read_ids.append(outbox_id)
            end = self._consumer.highwater(tp)
            if end is not None and records[-1].offset + 1 >= end:
                self._caught_up = True
        return batch

    async def _open(self, thread_id: str | None) -> int:
        await self._consumer.start()
        self._started = True
        if thread_id is None:
            return -1
        await self._consumer.topics()  # loads the cluster metadata
        partitions = sorted(self._consumer.partitions_for_topic(topics.EVENTS) or [])
        if not partitions:
            raise KafkaError(f"topic {topics.EVENTS} has no partitions")
        partition = int(DefaultPartitioner()(thread_id.encode(), partitions, partitions))
        self._consumer.assign([TopicPartition(topics.EVENTS, partition)])
        return partition

    async def close(self) -> None:
        """Disconnect, even while the request is being cancelled (a client went away)."""
        self._release()
        if self._thread is not None:
            self._bell.leave(self._thread, self._on_ring)
            self._thread = None
        if self._started:
            self._started = False
            with anyio.CancelScope(shield=True), contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()

    async def frames(
        self,
        run_id: str,
        *,
        after_outbox_id: int = 0,
        settled: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[bytes]:
        """SSE frames of the run's events until it ends or needs action, then `done`.

        `after_outbox_id` skips events written before the request that opened the stream
        (a broker may place "the end" of a partition a little early). `settled` tells whether
        the run has ended already: a resumed stream that started after the run's last event
        ends once the partition stays quiet and the run is over.
        """
        clock = asyncio.get_running_loop().time
        quiet_since = asked = clock()
        seen: set[str] = set()
        metrics.ACTIVE_STREAMS.inc()
        try:
            while True:
                batch = await self._next_batch()
                if not batch:
                    quiet = clock() - quiet_since
                    due = clock() - asked >= IDLE_SECONDS  # looks can come every 20 ms
                    if settled is not None and quiet >= 2 * IDLE_SECONDS and due:
                        asked = clock()
                        if await settled():
                            yield DONE
                            return
                    if quiet >= KEEPALIVE_SECONDS:
                        quiet_since = clock()
                        yield b": keep-alive\n\n"
                    continue
                quiet_since = clock()
                for records in batch.values():
                    for record in records:
                        event = _decode(record.value)
                        if event is None or event.get("runid") != run_id:
                            continue
                        if event["id"] in seen or event["type"] == "error":
                            continue  # a duplicate (delivery is at-least-once)
                        if after_outbox_id and _outbox_id(record.headers) <= after_outbox_id:
                            continue
                        seen.add(event["id"])
                        if event["type"] == DROPPED:
                            if event["data"].get("type") in ENDS_STREAM:
                                yield error_frame(
                                    "The run's last event was too large to stream;"
                                    " retrieve the run for its result."
                                )
                                return
                            continue
                        data = json.dumps(event["data"], separators=(",", ":"))
                        yield (
                            f"id: {record.partition}-{record.offset}\n"
                            f"event: {event['type']}\ndata: {data}\n\n"
                        ).encode()
                        if event["type"] in ENDS_STREAM:
                            yield DONE
                            return
        except (KafkaError, OSError) as exc:
            log.warning("stream of run %s broke: %s", run_id, exc)
            yield error_frame(f"The event stream broke: {exc}")
        finally:
            metrics.ACTIVE_STREAMS.dec()
            await self.close()


def _decode(value: bytes | None) -> dict[str, Any] | None:
    """An event of the topic, or None for a record that is not one (never breaks a stream)."""
    try:
        event = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return None
    if not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
        return None
    return event


def _outbox_id(headers: Sequence[tuple[str, bytes]]) -> int:
    for name, value in headers:
        if name == OUTBOX_ID_HEADER:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def sse(frames: AsyncIterator[bytes]) -> StreamingResponse:
    """A `text/event-stream` response, unbuffered."""
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def run_or_stream(
    pool: asyncpg.Pool,
    bootstrap: str,
    *,
    stream: bool,
    thread_id: str,
    work: Callable[[asyncpg.Connection], Awaitable[Run]],
    headers: dict[str, str],
) -> Response:
    """Do `work` in one transaction; answer with the run, or stream its events.

    For a stream the reader is placed at the end of the thread's partition before the
    transaction commits, so the stream begins with the first event `work` caused. Errors
    raised by `work` are ordinary JSON errors: no SSE byte has been sent yet.
    """
    reader = RunStream(bootstrap) if stream else None
    try:
        if reader is not None:
            await reader.open_at_end(thread_id)
        async with pool.acquire() as conn, conn.transaction():
            floor = await high_water(conn) if reader is not None else 0  # a stream's floor
            run = await work(conn)
    except BaseException:
        if reader is not None:
            await reader.close()
        raise
    if reader is None:
        response: JSONResponse = out(run, headers=headers)
        return response
    return sse(reader.frames(run.id, after_outbox_id=floor))


START_WAIT_SECONDS = 10.0


def settled_check(pool: asyncpg.Pool, run_id: str) -> Callable[[], Awaitable[bool]]:
    """Whether the run is over (or waiting for tool outputs): nothing more will come."""

    async def settled() -> bool:
        async with pool.acquire() as conn:
            status = await conn.fetchval("SELECT status FROM runs WHERE id = $1", run_id)
        return status is None or status in _SETTLED

    return settled


_SETTLED = {"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"}


async def wait_for_start(pool: asyncpg.Pool, run_id: str) -> str | None:
    """Where the run's events begin, once the relay has published its first one."""
    deadline = asyncio.get_running_loop().time() + START_WAIT_SECONDS
    while True:
        async with pool.acquire() as conn:
            start = await conn.fetchval("SELECT start FROM run_streams WHERE run_id = $1", run_id)
        if start is not None or asyncio.get_running_loop().time() > deadline:
            return str(start) if start is not None else None
        await asyncio.sleep(0.05)
