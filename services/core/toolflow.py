"""Tool outputs coming back to a run: from the client (submit_tool_outputs) or the executor."""

from typing import Any

import asyncpg

from schemas.requests import ToolOutput
from schemas.runs import Run
from services.core import outbox, runstate
from services.core.errors import InvalidRequest, NotFound
from services.core.store import runs, steps, threads, toolcalls


async def _lock(conn: asyncpg.Connection, thread_id: str, run_id: str) -> Run:
    await threads.get(conn, thread_id, lock=True)
    row = await conn.fetchrow(
        "SELECT * FROM runs WHERE id = $1 AND thread_id = $2 FOR UPDATE", run_id, thread_id
    )
    if row is None:
        raise NotFound.of("run", run_id)
    return runs.render(dict(row))


async def _close_step_if_answered(
    conn: asyncpg.Connection, step_id: str, thread_id: str, cause: str
) -> bool:
    calls = await toolcalls.of_step(conn, step_id)
    if any(c.output is None for c in calls):
        return False
    closed = await steps.close(
        conn, step_id, "completed", step_details=toolcalls.step_details(calls)
    )
    await outbox.emit(conn, "thread.run.step.completed", thread_id, closed, cause)
    return True


async def submit(
    conn: asyncpg.Connection,
    thread_id: str,
    run_id: str,
    outputs: list[ToolOutput],
    *,
    cause: str | None = None,
) -> Run:
    """Accept the client's outputs for every pending call; the run goes back to `queued`."""
    run = await _lock(conn, thread_id, run_id)
    if run.status != "requires_action":
        raise InvalidRequest(f'Runs in status "{run.status}" do not accept tool outputs.')
    pending = [c for c in await toolcalls.of_run(conn, run_id)
               if c.handler == "client" and c.output is None]  # fmt: skip
    expected = [c.id for c in pending]
    got = [o.tool_call_id for o in outputs]
    if sorted(expected) != sorted(got):
        raise InvalidRequest(
            f"Expected tool outputs for call_ids {expected!r}, got {got!r}", param="tool_outputs"
        )
    for output in outputs:
        await toolcalls.store_output(
            conn, run_id, output.tool_call_id, output.output, handler="client"
        )
    cause = cause or await conn.fetchval("SELECT cause_event_id FROM runs WHERE id = $1", run_id)
    cause = cause or run_id
    await _close_step_if_answered(conn, pending[0].step_id, thread_id, cause)
    queued = await runstate.transition(conn, run_id, "queued", fields={"required_action": None})
    assert queued is not None  # the row is locked and was in requires_action
    await outbox.emit(conn, "thread.run.queued", thread_id, queued, cause)
    await runs.wake(conn, run_id)
    return queued


async def accept_result(
    conn: asyncpg.Connection,
    thread_id: str,
    run_id: str,
    call_id: str,
    output: str,
    is_error: bool,
    details: dict[str, Any] | None = None,
) -> bool:
    """Store a server-side result once; wake the run when its step has every output.

    Returns False for a result stored before (a redelivery) or for an unknown call.
    """
    try:
        run = await _lock(conn, thread_id, run_id)
    except NotFound:
        return False
    stored = await toolcalls.store_output(
        conn, run_id, call_id, output, handler="server", is_error=is_error, details=details
    )
    if stored is None:
        return False
    if stored.type == "code_interpreter":
        # The outputs, as the hosted tool streamed them once the code had run.
        outputs = stored.as_step_entry()["code_interpreter"]["outputs"]
        entry = {"index": stored.position, "type": "code_interpreter", "code_interpreter": {
            "outputs": [{"index": i, **output} for i, output in enumerate(outputs)]}}  # fmt: skip
        cause = await conn.fetchval("SELECT cause_event_id FROM runs WHERE id = $1", run_id)
        delta = toolcalls.step_delta(stored.step_id, [entry])
        await outbox.emit(
            conn, "thread.run.step.delta", thread_id, delta, cause or run_id, run_id=run_id
        )
    calls = await toolcalls.of_step(conn, stored.step_id)
    if any(c.output is None for c in calls):
        return True
    if run.status == "in_progress":
        # Parked while the executor worked: make it claimable now and tell a run-poller.
        await conn.execute(
            "UPDATE runs SET lease_expires_at = now(), updated_at = now()"
            " WHERE id = $1 AND lease_token IS NULL",
            run_id,
        )
        await runs.wake(conn, run_id)
    return True
