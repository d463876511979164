"""What an operator asks of a running system: `threadbus status` and `threadbus tail`."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from schemas import topics
from services.core import bus, db
from services.core.runtime import LIVE_SECONDS

SERVICES = ("api", "run-starter", "run-poller", "tool-executor", "message-archiver",
            "file-indexer")  # fmt: skip
GROUPS = {
    topics.GROUP_RUN_STARTER: (topics.INBOUND,),
    topics.GROUP_RUN_POLLER: (topics.RUNS,),
    topics.GROUP_RUN_POLLER_RESULTS: (topics.TOOL_RESULTS,),
    topics.GROUP_TOOL_EXECUTOR: (topics.TOOL_CALLS,),
    topics.GROUP_MESSAGE_ARCHIVER: (topics.EVENTS,),
    topics.GROUP_FILE_INDEXER: (topics.INGEST,),
}
"""Each consumer group and the topics it reads: its lag is what it has yet to read of them."""


async def status(database_url: str, bootstrap: str) -> dict[str, Any]:
    """The system at a glance: live processes per service, runs by status, the outbox, and,
    from the broker, each group's lag and the DLQ's size (None where the broker is away)."""
    conn = await db.connect(database_url)
    try:
        live = await conn.fetch(
            "SELECT service, count(*) AS live, count(*) FILTER (WHERE consuming) AS consuming"
            " FROM workers WHERE heartbeat_at > now() - make_interval(secs => $1)"
            " GROUP BY service",
            LIVE_SECONDS,
        )
        runs = await conn.fetch("SELECT status, count(*) AS n FROM runs GROUP BY status")
        outbox = await conn.fetchrow(
            "SELECT count(*) AS waiting,"
            " coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest FROM outbox"
        )
        dead = await conn.fetchval("SELECT count(*) FROM outbox_dead")
    finally:
        await conn.close()
    found = {row["service"]: row for row in live}
    report: dict[str, Any] = {
        "services": {
            name: {
                "live": found[name]["live"] if name in found else 0,
                "consuming": found[name]["consuming"] if name in found else 0,
            }
            for name in SERVICES
        },
        "runs": {row["status"]: row["n"] for row in runs},
        "outbox": {
            "waiting": outbox["waiting"],
            "oldest_seconds": round(float(outbox["oldest"]), 1),
            "dead": dead,
        },
    }
    try:
        report["lag"], report["dlq"] = await asyncio.wait_for(broker_view(bootstrap), 15)
    except (TimeoutError, OSError, KafkaError) as exc:
        report["lag"], report["dlq"] = None, None
        report["broker_error"] = f"{type(exc).__name__}: {exc}"
    return report


async def broker_view(bootstrap: str) -> tuple[dict[str, int], int]:
    """Each consumer group's lag, and the number of records on the DLQ."""
    consumer = AIOKafkaConsumer(
        **bus.client_options(), bootstrap_servers=bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await _ends(consumer, topics.ALL)
        lag = {group: await _lag(bootstrap, group, read, ends) for group, read in GROUPS.items()}
        starts = await consumer.beginning_offsets([tp for tp in ends if tp.topic == topics.DLQ])
        return lag, sum(ends[tp] - start for tp, start in starts.items())
    finally:
        await consumer.stop()


async def _lag(
    bootstrap: str, group: str, read: tuple[str, ...], ends: dict[TopicPartition, int]
) -> int:
    """What `group` has yet to read: its committed offsets against the ends."""
    mine = [tp for tp in ends if tp.topic in read]
    offsets = await committed_offsets(bootstrap, group, mine)
    return sum(max(0, ends[tp] - max(0, offsets[tp])) for tp in mine)


async def committed_offsets(
    bootstrap: str, group: str, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """`group`'s committed offset of each partition (-1: none).

    Asked through a consumer of the group that never subscribes, so it never joins or leaves
    the group (the admin client's offset request is one the embedded broker cannot answer).
    """
    member = AIOKafkaConsumer(
        **bus.client_options(), bootstrap_servers=bootstrap, group_id=group,
        enable_auto_commit=False,
    )  # fmt: skip
    await member.start()
    try:
        offsets = {tp: await member.committed(tp) for tp in partitions}
    finally:
        await member.stop()
    return {tp: -1 if offset is None else offset for tp, offset in offsets.items()}


async def _ends(consumer: AIOKafkaConsumer, names: tuple[str, ...]) -> dict[TopicPartition, int]:
    await consumer.topics()
    partitions = [
        TopicPartition(name, p)
        for name in names
        for p in sorted(consumer.partitions_for_topic(name) or [])
    ]
    return dict(await consumer.end_offsets(partitions))


def render_status(report: dict[str, Any]) -> str:
    """The report as lines a person reads."""
    lines = ["services (processes alive in the last 10 s, of them consuming):"]
    for name, seen in report["services"].items():
        mark = "" if seen["live"] else "   <- none running"
        lines.append(f"  {name:<17} {seen['live']} live, {seen['consuming']} consuming{mark}")
    runs = report["runs"]
    lines.append("runs: " + (", ".join(f"{s} {n}" for s, n in sorted(runs.items())) or "none"))
    outbox = report["outbox"]
    lines.append(f"outbox: {outbox['waiting']} waiting, oldest {outbox['oldest_seconds']} s;"
                 f" {outbox['dead']} too large for the broker (outbox_dead)")  # fmt: skip
    if report["lag"] is None:
        lines.append(f"broker: unreachable ({report['broker_error']})")
    else:
        lines.append("consumer lag: " + ", ".join(f"{g} {n}" for g, n in report["lag"].items()))
        lines.append(f"dead letters ({topics.DLQ}): {report['dlq']}")
    return "\n".join(lines)


async def tail(
    bootstrap: str, thread_id: str, *, from_start: bool, stop: Callable[[], bool] | None = None
) -> AsyncIterator[str]:
    """The thread's events as readable lines, live (from the start with `from_start`)."""
    consumer = AIOKafkaConsumer(
        **bus.client_options(), bootstrap_servers=bootstrap, enable_auto_commit=False,
        fetch_max_wait_ms=bus.urgent_fetch_wait_ms(),
    )  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        partitions = sorted(consumer.partitions_for_topic(topics.EVENTS) or [])
        if not partitions:
            raise KafkaError(f"topic {topics.EVENTS} has no partitions")
        partition = int(DefaultPartitioner()(thread_id.encode(), partitions, partitions))
        tp = TopicPartition(topics.EVENTS, partition)
        consumer.assign([tp])
        if from_start:
            await consumer.seek_to_beginning(tp)
        else:
            await consumer.seek_to_end(tp)
        offset = await consumer.position(tp)
        yield f"# following {thread_id} on {topics.EVENTS} partition {partition} from {offset}"
        while stop is None or not stop():
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                line = describe(record.value, thread_id)
                if line is not None:
                    yield line
    finally:
        await consumer.stop()


def describe(value: bytes | None, thread_id: str) -> str | None:
    """One event of the thread as a line: time, type, run, and what changed; None for another
    thread's event or a record that is not an event."""
    try:
        event = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("subject") != thread_id:
        return None
    data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
    kind = str(event.get("type"))
    when = _clock(event.get("time"))
    run = event.get("runid") or "-"
    if kind == "thread.message.delta":
        parts = data.get("delta", {}).get("content", [])
        text = "".join(p.get("text", {}).get("value", "") for p in parts if isinstance(p, dict))
        detail = json.dumps(text, ensure_ascii=False)
    elif kind.startswith("thread.run.step."):
        detail = f"{data.get('type')} {data.get('status')}"
    elif kind.startswith("thread.run."):
        detail = str(data.get("status"))
        if data.get("last_error"):
            detail += f": {data['last_error'].get('message')}"
    elif kind.startswith("thread.message."):
        detail = f"{data.get('role')} {data.get('status')} {data.get('id')}"
    else:
        detail = ""
    return f"{when}  {kind:<28} {run:<30} {detail}".rstrip()


def _clock(stamp: object) -> str:
    try:
        return datetime.fromisoformat(str(stamp)).astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return "--:--:--.---"
