"""A plain turn's end in one statement: the run completed, its reply and step written whole,
and their eight events (seven for an empty reply, which has no delta), where BEGIN, three
statements and COMMIT took five round trips.

Plain: the turn called no tools and was not cut short, its reply was not opened while the
model answered (a fast model), and nothing the reply holds needs a query (no images the code
displayed, no file citations, no links to files the code wrote). The events are rendered by
Postgres from the rows the statement writes (`outbox.wire_sql`: each field the column of the
same name), in the order and with the envelopes the transaction path gives them.
"""

import functools
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.runs import Run, RunStep
from schemas.threads import Message
from services.core import db, outbox, runstate, tracing
from services.core.ids import new_id
from services.core.runstate import Lease, LeaseLost

_STEP = outbox.wire_sql(RunStep, "s")
_STEP_OPENED = outbox.wire_sql(
    RunStep, "s", status="'in_progress'::text", completed_at="NULL::bigint", usage="NULL::jsonb"
)
_MESSAGE = outbox.wire_sql(Message, "m")
_MESSAGE_OPENED = outbox.wire_sql(
    Message, "m", status="'in_progress'::text", completed_at="NULL::bigint",
    incomplete_at="NULL::bigint", incomplete_details="NULL::jsonb", content="'[]'::jsonb",
)  # fmt: skip


def _delta(text: str) -> str:
    """`ReplyWriter.flush_in`'s delta: the reply's text as its first content part."""
    part = ("jsonb_build_object('index', 0, 'type', 'text'::text,"
            f" 'text', jsonb_build_object('value', {text}))")  # fmt: skip
    return (
        "jsonb_build_object('id', m.id, 'object', 'thread.message.delta'::text,"
        f" 'delta', jsonb_build_object('content', jsonb_build_array({part})))"
    )


_EVENTS = (
    ("thread.run.step.created", _STEP_OPENED, "s"),
    ("thread.run.step.in_progress", _STEP_OPENED, "s"),
    ("thread.message.created", _MESSAGE_OPENED, "m"),
    ("thread.message.in_progress", _MESSAGE_OPENED, "m"),
    ("thread.message.delta", "", "m"),
    ("thread.message.completed", _MESSAGE, "m"),
    ("thread.run.step.completed", _STEP, "s"),
    ("thread.run.completed", outbox.wire_sql(Run, "r"), "r"),
)
"""The events of a turn's end, in the transaction path's order: (type, data, the row)."""


def _events(text: str, cause: str, ids: str, time: str) -> str:
    """A query of the events (`n`, `key`, `payload`) from the rows `r`, `s` and `m`; the
    delta's text, the cause, the event ids and the time are the parameters named."""
    rows = []
    for n, (type_, data, row) in enumerate(_EVENTS, start=1):
        envelope = outbox.event_sql(
            type_, subject=f"{row}.thread_id", data=data or _delta(f"{text}::text"),
            cause=f"{cause}::text", run_id="r.id", event_id=f"({ids}::text[])[{n}]", time=time,
        )  # fmt: skip
        source = "r" if row == "r" else f"{row}, r"
        where = f" WHERE {text}::text <> ''" if type_ == "thread.message.delta" else ""
        rows.append(f"SELECT {n} AS n, {row}.thread_id AS key, {envelope} AS payload"
                    f" FROM {source}{where}")  # fmt: skip
    return " UNION ALL ".join(rows)


@functools.cache
def _statement(first: int, lock: str, update: str) -> str:
    """The statement, its own parameters from `$first` on: step id, message id, content,
    usage, the delta's text, topic, cause, trace, event ids, time."""
    step_id, message_id, content, usage, text, topic, cause, trace, ids, time = (
        f"${first + i}" for i in range(10)
    )
    return (
        f"{lock}, r AS ({update}),"
        " s AS (INSERT INTO run_steps (id, run_id, thread_id, assistant_id, step_index, type,"
        " status, step_details, usage, completed_at)"
        f" SELECT {step_id}::text, r.id, r.thread_id, r.assistant_id,"
        " (SELECT coalesce(max(step_index) + 1, 0) FROM run_steps WHERE run_id = r.id),"
        " 'message_creation', 'completed', jsonb_build_object('type', 'message_creation'::text,"
        f" 'message_creation', jsonb_build_object('message_id', {message_id}::text)),"
        f" {usage}::jsonb, epoch_now() FROM r RETURNING *),"
        " m AS (INSERT INTO messages (id, thread_id, status, role, content, assistant_id, run_id,"
        f" completed_at) SELECT {message_id}::text, r.thread_id, 'completed', 'assistant',"
        f" {content}::jsonb, r.assistant_id, r.id, epoch_now() FROM r RETURNING *),"
        " o AS (INSERT INTO outbox (topic, key, payload, trace)"
        f" SELECT {topic}::text, e.key, e.payload, {trace}::text"
        f" FROM ({_events(text, cause, ids, time)}) e ORDER BY e.n)"
        " SELECT (SELECT age_seconds FROM r) AS age_seconds, EXISTS (SELECT 1 FROM r) AS ended,"
        " (SELECT pending_run FROM t) AS pending_run"
    )


async def finish(
    conn: asyncpg.Connection,
    lease: Lease,
    usage: dict[str, int],
    content: list[dict[str, Any]],
    delta: str,
) -> bool:
    """End the run `completed` with its reply (`content`; `delta`, the text its delta event
    carries, none if empty) in one statement outside a transaction.

    False when the thread has a pending run: nothing was written, and the caller ends the run
    in a transaction that also starts that one. LeaseLost when the run is no longer ours."""
    assert not conn.is_in_transaction(), "one statement, outside a transaction"
    how = runstate.move(
        lease.run_id, "completed", lease=lease, spend=usage, locking_thread=lease.thread_id,
        unless_pending=True,
    )  # fmt: skip
    row = await conn.fetchrow(
        _statement(len(how.params) + 1, how.lock, how.update), *how.params,
        new_id("step"), new_id("msg"), content, usage, delta, topics.EVENTS, lease.cause,
        tracing.current(), [new_id("evt") for _ in _EVENTS], datetime.now(UTC).isoformat(),
    )  # fmt: skip
    assert row is not None
    if row["ended"]:
        db.on_commit(conn, functools.partial(runstate.entered, "completed", row))
        return True
    if row["pending_run"]:
        return False
    raise LeaseLost(lease.run_id)
