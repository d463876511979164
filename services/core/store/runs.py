"""SQL for runs: creation with its events and wake-up, reads, and the fold-in queue."""

import functools
import logging
from typing import Any

import asyncpg

from schemas.assistants import Assistant
from schemas.common import Page
from schemas.requests import RunOptions
from schemas.runs import ACTIVE_STATUSES, Run
from services.core import db, metrics, outbox, tracing
from services.core.errors import InvalidRequest, NotFound
from services.core.ids import new_id
from services.core.store import assistants
from services.core.store.pagination import Order, page

log = logging.getLogger(__name__)


WAKE_CHANNEL = "threadbus_runs"
"""Postgres NOTIFY channel naming a run to claim: the run-pollers listen (ARCHITECTURE.md,
"The hot path")."""


def render(row: dict[str, Any]) -> Run:
    """A row as the wire object."""
    return Run.model_validate(row)


def _effective(assistant: Assistant, options: RunOptions) -> dict[str, Any]:
    """The run's snapshot of its settings: overrides first, then the assistant's, then defaults."""
    instructions = (
        options.instructions if options.instructions is not None else assistant.instructions
    ) or ""
    if options.additional_instructions:
        instructions = "\n\n".join(p for p in (instructions, options.additional_instructions) if p)
    tools = options.tools if options.tools is not None else assistant.tools

    def first(*values: Any) -> Any:
        return next((v for v in values if v is not None), None)

    return {
        "model": options.model or assistant.model,
        "instructions": instructions,
        "tools": [t.model_dump(mode="json", by_alias=True) for t in tools],
        "metadata": options.metadata or {},
        "temperature": first(options.temperature, assistant.temperature, 1.0),
        "top_p": first(options.top_p, assistant.top_p, 1.0),
        "max_prompt_tokens": options.max_prompt_tokens,
        "max_completion_tokens": options.max_completion_tokens,
        "truncation_strategy": (
            options.truncation_strategy.model_dump(mode="json")
            if options.truncation_strategy
            else {"type": "auto", "last_messages": None}
        ),
        "tool_choice": _dump(first(options.tool_choice, "auto")),
        "parallel_tool_calls": first(options.parallel_tool_calls, True),
        "response_format": _dump(first(options.response_format, assistant.response_format, "auto")),
        "reasoning_effort": first(options.reasoning_effort, assistant.reasoning_effort),
    }


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True) if hasattr(value, "model_dump") else value


async def active(conn: asyncpg.Connection, thread_id: str) -> str | None:
    """The id of the thread's active run, if any."""
    value = await conn.fetchval(
        "SELECT id FROM runs WHERE thread_id = $1 AND status = ANY($2::text[])",
        thread_id,
        list(ACTIVE_STATUSES),
    )
    return str(value) if value is not None else None


async def create(
    conn: asyncpg.Connection,
    thread_id: str,
    assistant: Assistant,
    options: RunOptions,
    *,
    expires_seconds: int,
    cause: str | None = None,
    run_id: str | None = None,
) -> Run:
    """Queue a run (see `queue`); InvalidRequest when the thread already has an active run."""
    run = await queue(
        conn, thread_id, assistant, options,
        expires_seconds=expires_seconds, cause=cause, run_id=run_id,
    )  # fmt: skip
    if run is None:
        running = await active(conn, thread_id)
        raise InvalidRequest(f"Thread {thread_id} already has an active run {running}.")
    return run


async def queue(
    conn: asyncpg.Connection,
    thread_id: str,
    assistant: Assistant,
    options: RunOptions,
    *,
    expires_seconds: int,
    cause: str | None = None,
    run_id: str | None = None,
) -> Run | None:
    """Queue a run and emit `thread.run.created`, `thread.run.queued` and a wake-up; None
    when the thread already has an active run.

    One statement: the insert gives way to the one-active-run index, and wakes the
    run-pollers as it commits.
    """
    values = _effective(assistant, options)
    if trace := tracing.current():
        values["trace"] = trace  # the run's turns continue the trace it was created in
    run_id = run_id or new_id("run")
    cols = ["id", "thread_id", "assistant_id", "status", "cause_event_id", *values]
    row = await conn.fetchrow(
        f"WITH r AS (INSERT INTO runs ({', '.join(cols)}, expires_at)"
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(cols)))},"
        f" epoch_now() + ${len(cols) + 1}) ON CONFLICT DO NOTHING RETURNING *)"
        f" SELECT r.*, pg_notify('{WAKE_CHANNEL}', r.id)::text AS woken FROM r",
        run_id,
        thread_id,
        assistant.id,
        "queued",
        cause,
        *values.values(),
        expires_seconds,
    )
    if row is None:
        return None
    values = dict(row)
    del values["woken"]
    db.on_commit(conn, functools.partial(metrics.RUN_TRANSITIONS.labels("queued").inc))
    run = render(values)
    await outbox.emit(conn, "thread.run.created", thread_id, run, cause)
    await outbox.emit(conn, "thread.run.queued", thread_id, run, cause)
    return run


async def wake(conn: asyncpg.Connection, run_id: str) -> None:
    """Wake the run-pollers when the transaction commits (a hint: the run row decides)."""
    await conn.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, run_id)


async def get(conn: asyncpg.Connection, thread_id: str, run_id: str) -> Run:
    """The run of that thread, or NotFound."""
    row = await conn.fetchrow(
        "SELECT * FROM runs WHERE id = $1 AND thread_id = $2", run_id, thread_id
    )
    if row is None:
        raise NotFound.of("run", run_id)
    return render(dict(row))


async def list_page(
    conn: asyncpg.Connection,
    thread_id: str,
    *,
    limit: int,
    order: Order,
    after: str | None,
    before: str | None,
) -> Page[Run]:
    """A page of the thread's runs."""
    return await page(
        conn,
        table="runs",
        where="thread_id = $1",
        args=[thread_id],
        render=render,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )


async def fold(
    conn: asyncpg.Connection,
    thread_id: str,
    assistant_id: str,
    options: RunOptions,
    *,
    cause: str | None,
) -> None:
    """Remember that a run is wanted once the thread's active run ends (latest options win).
    The caller holds the thread's lock; a trigger flags the thread (`threads.pending_run`,
    which the end of a run reads)."""
    await conn.execute(
        "INSERT INTO pending_runs (thread_id, assistant_id, options, cause_event_id)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (thread_id) DO UPDATE SET"
        " assistant_id = EXCLUDED.assistant_id, options = EXCLUDED.options,"
        " cause_event_id = EXCLUDED.cause_event_id",
        thread_id,
        assistant_id,
        options.model_dump(mode="json", exclude_unset=True, by_alias=True),
        cause,
    )


async def take_pending(conn: asyncpg.Connection, thread_id: str) -> dict[str, Any] | None:
    """Remove and return the thread's pending run request, if any (a trigger clears the
    thread's flag)."""
    row = await conn.fetchrow(
        "DELETE FROM pending_runs WHERE thread_id = $1 RETURNING *", thread_id
    )
    return dict(row) if row is not None else None


async def start_pending(conn: asyncpg.Connection, thread_id: str, expires_seconds: int) -> None:
    """Start the run that inbound messages folded in while the last one was active (the caller
    holds the thread's lock)."""
    pending = await take_pending(conn, thread_id)
    if pending is None:
        return
    try:
        assistant = await assistants.get(conn, pending["assistant_id"])
    except NotFound:
        log.warning("pending run for %s dropped: its assistant is gone", thread_id)
        return
    await create(
        conn,
        thread_id,
        assistant,
        RunOptions.model_validate(pending["options"]),
        expires_seconds=expires_seconds,
        cause=pending["cause_event_id"],
    )
