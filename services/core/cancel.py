"""Cancelling a run: at once when nobody drives it, else by telling its run-poller to stop."""

import asyncpg

from schemas.runs import TERMINAL_STATUSES, Run
from services.core import outbox, runstate
from services.core.errors import InvalidRequest, NotFound
from services.core.store import messages, runs, steps, threads

CHANNEL = "threadbus_cancel"
"""Postgres NOTIFY channel; the payload is the id of a run to stop."""


async def request(
    conn: asyncpg.Connection,
    thread_id: str,
    run_id: str,
    *,
    expires_seconds: int,
    cause: str | None = None,
) -> Run:
    """Cancel an active run; returns it `cancelling` (a worker is stopping it) or `cancelled`."""
    await threads.get(conn, thread_id, lock=True)
    row = await conn.fetchrow(
        "SELECT *, (lease_token IS NOT NULL AND lease_expires_at > now()) AS driven"
        " FROM runs WHERE id = $1 AND thread_id = $2 FOR UPDATE",
        run_id,
        thread_id,
    )
    if row is None:
        raise NotFound.of("run", run_id)
    run = runs.render(dict(row))
    if run.status in TERMINAL_STATUSES:
        raise InvalidRequest(f"Cannot cancel run with status {run.status!r}.")
    cause = cause or row["cause_event_id"] or run_id
    if run.status == "cancelling":
        return run
    cancelling = await runstate.transition(conn, run_id, "cancelling")
    assert cancelling is not None  # locked, and active
    await outbox.emit(conn, "thread.run.cancelling", thread_id, cancelling, cause)
    if row["driven"]:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, run_id)
        return cancelling
    return await finish(conn, run_id, thread_id, cause, expires_seconds=expires_seconds)


async def finish(
    conn: asyncpg.Connection,
    run_id: str,
    thread_id: str,
    cause: str,
    *,
    expires_seconds: int | None,
    lease: runstate.Lease | None = None,
) -> Run:
    """`cancelling` → `cancelled`: the open step is cancelled, its reply `incomplete`.

    The thread and the run are locked by the caller.
    """
    step = await steps.current(conn, run_id)
    if step is not None and step.step_details.type == "message_creation":
        reply_id = step.step_details.message_creation.message_id
        reply = await conn.fetchrow(
            "UPDATE messages SET status = 'incomplete', incomplete_at = epoch_now(),"
            " incomplete_details = $2 WHERE id = $1 AND status = 'in_progress' RETURNING *",
            reply_id,
            {"reason": "run_cancelled"},
        )
        if reply is not None:
            message = messages.render(dict(reply))
            await outbox.emit(conn, "thread.message.incomplete", thread_id, message, cause)
    if step is not None:
        closed = await steps.close(conn, step.id, "cancelled")
        await outbox.emit(conn, "thread.run.step.cancelled", thread_id, closed, cause)
    spent = await conn.fetchval("SELECT spent FROM runs WHERE id = $1", run_id)
    cancelled = await runstate.transition(
        conn, run_id, "cancelled", lease=lease, fields={"usage": spent}
    )
    if cancelled is None:
        raise runstate.LeaseLost(run_id)
    await outbox.emit(conn, "thread.run.cancelled", thread_id, cancelled, cause)
    if expires_seconds is not None:
        await runs.start_pending(conn, thread_id, expires_seconds)
    return cancelled
