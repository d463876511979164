"""Accepting inbound events: validate, apply idempotently, or reject to the DLQ with a reason."""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, assert_never

import asyncpg
from pydantic import ValidationError

from schemas import topics
from schemas.assistants import Assistant
from schemas.events import INBOUND, CancelRun, DeadLetter, SubmitToolOutputs, UserMessage
from schemas.requests import MessageCreate, RunOptions
from services.core import cancel, db, metrics, outbox, projects, toolflow
from services.core.errors import InvalidRequest, NotFound, ThreadbusError
from services.core.ids import new_id
from services.core.store import assistants, messages, runs, threads

log = logging.getLogger(__name__)

InboundEvent = UserMessage | SubmitToolOutputs | CancelRun

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
    event: InboundEvent | None = None
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
                    first, assistant = await _first_time_in_project(conn, source, event_id, event)
                    if not first:
                        return "duplicate"
                    await _apply(conn, event, expires_seconds, assistant)
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
    conn: asyncpg.Connection, source: str, event_id: str | None, event: InboundEvent
) -> tuple[bool, Assistant | None]:
    """Record the event as seen (False: seen before) and scope the transaction to its project,
    as an API request with its key would be (another project's thread or assistant is not
    there), and read a user message's assistant in that project: one statement for all three.

    The assistant is None for other events; NotFound is raised for a first-seen message whose
    assistant is not in the project.
    """
    project = event.project or projects.DEFAULT_NAME
    assistant_id = event.data.assistant_id if isinstance(event, UserMessage) else None
    if event_id is None:
        first, scoped = True, await projects.act_in(conn, project)
        row = None
    else:
        row = await conn.fetchrow(
            f"WITH seen AS ({_SEEN}), project AS (SELECT id FROM projects WHERE name = $4)"
            " SELECT EXISTS (SELECT 1 FROM seen) AS seen_first, (SELECT set_config("
            "'threadbus.project', id, true) FROM project) IS NOT NULL AS seen_scoped, a.*"
            " FROM (VALUES (1)) AS one LEFT JOIN assistants a"
            " ON a.id = $5 AND a.project_id = (SELECT id FROM project)",
            CONSUMER, source, event_id, project, assistant_id,
        )  # fmt: skip
        first, scoped = row["seen_first"], row["seen_scoped"]
    if first and not scoped:
        raise InvalidRequest(f"No project named {event.project!r}.", param="project")
    if not first or assistant_id is None:
        return bool(first), None
    if row is None:  # an event without an id: scoped above, read the assistant apart
        return True, await assistants.get(conn, assistant_id)
    found = {k: v for k, v in row.items() if k not in ("seen_first", "seen_scoped")}
    if found["id"] is None:
        raise NotFound.of("assistant", assistant_id)
    return True, assistants.render(found)


async def _apply(
    conn: asyncpg.Connection,
    event: InboundEvent,
    expires_seconds: int,
    assistant: Assistant | None,
) -> None:
    match event:
        case UserMessage():
            assert assistant is not None  # read with the event's first sight
            await _user_message(conn, event, assistant, expires_seconds)
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


async def _user_message(
    conn: asyncpg.Connection, event: UserMessage, assistant: Assistant, expires_seconds: int
) -> None:
    data = event.data
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
