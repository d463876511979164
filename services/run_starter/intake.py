"""Accepting inbound events: validate, apply idempotently, or reject to the DLQ with a reason."""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, assert_never

import asyncpg
from pydantic import ValidationError

from schemas import topics
from schemas.events import INBOUND, CancelRun, DeadLetter, SubmitToolOutputs, UserMessage
from schemas.requests import MessageCreate, RunOptions
from services.core import cancel, db, metrics, outbox, projects, toolflow
from services.core.errors import InvalidRequest, ThreadbusError
from services.core.ids import new_id
from services.core.store import assistants, messages, runs, threads

log = logging.getLogger(__name__)

CONSUMER = topics.GROUP_RUN_STARTER


@dataclass(frozen=True)
class Record:
    """Where an inbound record came from, for the DLQ."""

    value: bytes
    topic: str
    partition: int | None
    offset: int | None
    key: str | None


async def accept(pool: asyncpg.Pool, record: Record, *, expires_seconds: int) -> str:
    """Apply one inbound record exactly once; returns what happened (for logs and tests)."""
    problem: str | None = None
    try:
        payload: Any = json.loads(record.value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        payload, problem = None, f"the record is not JSON: {exc}"
    event_id, source = _identity(payload)
    event: UserMessage | SubmitToolOutputs | CancelRun | None = None
    if problem is None:
        try:
            event = INBOUND.validate_python(payload)
        except ValidationError as exc:
            problem = "the event is not a valid Threadbus inbound event: " + _explain(exc)
    code, subject = "invalid_event", None
    async with pool.acquire() as conn:
        if event is not None:
            try:
                async with conn.transaction():
                    if not await _first_time_in_project(conn, source, event_id, event.project):
                        return "duplicate"
                    await _apply(conn, event, expires_seconds)
                    return "accepted"
            except ThreadbusError as err:
                problem, code = err.message, err.code or "invalid_request"
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                # Input the database refuses (a NUL character in text, say) is bad input too.
                problem = f"the event could not be stored: {exc}"
            subject = event.subject
        # Refused: everything the event did was rolled back; record it as seen and reject it.
        async with conn.transaction():
            if event_id is not None and not await _first_time(conn, source, event_id):
                return "duplicate"
            await _reject(conn, record, event_id, problem or "", code, subject)
    return "rejected"


def _identity(payload: Any) -> tuple[str | None, str]:
    """The event's `id` and `source` (CloudEvents identity is the two together), as far as a
    record that may not be valid has them."""
    if not isinstance(payload, dict):
        return None, ""
    event_id, source = payload.get("id"), payload.get("source")
    return (
        event_id if isinstance(event_id, str) and event_id else None,
        source if isinstance(source, str) else "",
    )


_SEEN = (
    "INSERT INTO processed_events (consumer, source, event_id) VALUES ($1, $2, $3)"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)
"""Record an event as seen; returns its id the first time only."""


async def _first_time(conn: asyncpg.Connection, source: str, event_id: str) -> bool:
    return await conn.fetchval(_SEEN, CONSUMER, source, event_id) is not None


async def _first_time_in_project(
    conn: asyncpg.Connection, source: str, event_id: str | None, name: str | None
) -> bool:
    """Record the event as seen (False: seen before) and scope the transaction to its project,
    as an API request with its key would be (another project's thread or assistant is not
    there); one statement for both."""
    project = name or projects.DEFAULT_NAME
    if event_id is None:
        first, scoped = True, await projects.act_in(conn, project)
    else:
        row = await conn.fetchrow(
            f"WITH seen AS ({_SEEN})"
            " SELECT EXISTS (SELECT 1 FROM seen) AS first, (SELECT set_config("
            "'threadbus.project', id, true) FROM projects WHERE name = $4) IS NOT NULL AS scoped",
            CONSUMER, source, event_id, project,
        )  # fmt: skip
        first, scoped = row["first"], row["scoped"]
    if first and not scoped:
        raise InvalidRequest(f"No project named {name!r}.", param="project")
    return bool(first)


async def _apply(
    conn: asyncpg.Connection,
    event: UserMessage | SubmitToolOutputs | CancelRun,
    expires_seconds: int,
) -> None:
    match event:
        case UserMessage():
            await _user_message(conn, event, expires_seconds)
        case SubmitToolOutputs():
            await threads.get(conn, event.subject)  # NotFound for another project's
            data = event.data
            await toolflow.submit(
                conn, event.subject, data.run_id, data.tool_outputs, cause=event.id
            )
        case CancelRun():
            await threads.get(conn, event.subject)
            await cancel.request(
                conn, event.subject, event.data.run_id,
                expires_seconds=expires_seconds, cause=event.id,
            )  # fmt: skip
        case _:
            assert_never(event)


async def _user_message(conn: asyncpg.Connection, event: UserMessage, expires_seconds: int) -> None:
    data = event.data
    assistant = await assistants.get(conn, data.assistant_id)
    thread = await threads.ensure(conn, event.subject, cause=event.id)
    body = MessageCreate(
        role="user", content=data.content, attachments=data.attachments, metadata=data.metadata
    )
    await messages.create(conn, thread.id, body, cause=event.id, source=(event.source, event.id))
    options = data.run or RunOptions()
    queued = await runs.queue(
        conn, thread.id, assistant, options, expires_seconds=expires_seconds, cause=event.id
    )
    if queued is None:  # the thread has an active run: this message starts the next one
        await runs.fold(conn, thread.id, assistant.id, options, cause=event.id)


async def _reject(
    conn: asyncpg.Connection,
    record: Record,
    event_id: str | None,
    reason: str,
    code: str,
    thread_id: str | None = None,
) -> None:
    """Park the record on the DLQ with the reason and tell the sender with an `error` event."""
    key = thread_id or record.key
    letter = DeadLetter(
        id=new_id("dlq"),
        reason=reason,
        event_id=event_id,
        consumer=CONSUMER,
        attempts=1,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value.decode("utf-8", errors="replace"),
        failed_at=datetime.now(UTC),
    )
    await outbox.enqueue(conn, topics.DLQ, key, letter)
    db.on_commit(conn, metrics.DEAD_LETTERS.labels(CONSUMER).inc)
    error = {
        "error": {"message": reason, "type": "invalid_request_error", "param": None, "code": code},
        "event_id": event_id,
    }
    await outbox.enqueue(
        conn, topics.EVENTS, key, outbox.event("error", key or "", error, event_id)
    )
    log.info("rejected inbound event %s: %s", event_id, reason)


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
