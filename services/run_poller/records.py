"""What a turn writes: replies, tool steps, terminal statuses; each with its events, fenced."""

import logging
from typing import Any

import asyncpg

from schemas import topics
from schemas.events import ExecuteToolCall
from schemas.runs import Run, RunStatus, RunStep
from schemas.threads import Message
from services.core import outbox, runstate
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.model import Completion, ModelFailure
from services.core.runstate import Lease, LeaseLost
from services.core.store import messages, runs, steps, toolcalls
from services.core.store.toolcalls import ToolCallRow

log = logging.getLogger(__name__)


NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
"""A step's usage when its turn's tokens are counted on a sibling step."""


def usage_of(completion: Completion) -> dict[str, int]:
    """A turn's token usage."""
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def tool_calls_of(completion: Completion) -> list[dict[str, Any]]:
    """The model's calls, each with a unique `call_` id (some servers send none)."""
    seen: set[str] = set()
    calls = []
    for call in completion.tool_calls:
        call_id = call.get("id") or new_id("call")
        if call_id in seen:
            call_id = new_id("call")
        seen.add(call_id)
        calls.append({"id": call_id, "name": call["name"], "arguments": call["arguments"]})
    return calls


CLAIMABLE = (
    "SELECT id FROM runs WHERE (status = 'queued'"
    " AND updated_at < now() - make_interval(secs => $1))"
    " OR (status = 'in_progress' AND lease_expires_at < now())"
    " ORDER BY seq LIMIT 100"
)
"""Runs nobody drives: queued for longer than $1 seconds, or with an expired lease (the
engine's sweep offers them)."""


async def lock_thread(conn: asyncpg.Connection, thread_id: str) -> None:
    """Lock the thread first, then the run: the order every writer of a thread's runs uses."""
    await conn.execute("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE", thread_id)


async def hold(conn: asyncpg.Connection, lease: Lease, *, status: RunStatus = "in_progress") -> Run:
    """Lock the run's thread, then the run, and check the lease (raises LeaseLost); one
    statement: the thread's lock is taken in the CTE, before any run row is returned and
    locked, so the order is the one every writer uses."""
    row = await conn.fetchrow(
        f"{runstate.thread_locked(1)} SELECT r.* FROM runs r JOIN t ON t.id = r.thread_id"
        " WHERE r.id = $2 AND r.lease_token = $3 AND r.status = $4 FOR UPDATE OF r",
        lease.thread_id,
        lease.run_id,
        lease.token,
        status,
    )
    if row is None:
        raise LeaseLost(lease.run_id)
    return runs.render(dict(row))


async def hold_and_spend(conn: asyncpg.Connection, lease: Lease, usage: dict[str, int]) -> Run:
    """`hold`, and add a turn's usage to the run's running total, in one statement (the
    update locks the run as `FOR UPDATE` would, after the thread)."""
    row = await conn.fetchrow(
        f"{runstate.thread_locked(1)} UPDATE runs r SET spent = {runstate.spent_plus(4)}"
        " FROM t WHERE t.id = r.thread_id AND r.id = $2 AND r.lease_token = $3"
        " AND r.status = 'in_progress' RETURNING r.*",
        lease.thread_id,
        lease.run_id,
        lease.token,
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    if row is None:
        raise LeaseLost(lease.run_id)
    return runs.render(dict(row))


async def resume(conn: asyncpg.Connection, run: Run, cause: str) -> list[ToolCallRow]:
    """Close the run's open tool step if every call has its output.

    Returns the calls still waiting for a server-side result (empty: the model may go on).
    """
    step = await steps.current(conn, run.id)
    if step is None or step.type != "tool_calls":
        return []
    calls = await toolcalls.of_step(conn, step.id)
    waiting = [c for c in calls if c.output is None]
    if waiting:
        return waiting
    closed = await steps.close(
        conn, step.id, "completed", step_details=toolcalls.step_details(calls)
    )
    await outbox.emit(conn, "thread.run.step.completed", run.thread_id, closed, cause)
    return []


async def open_reply(conn: asyncpg.Connection, run: Run) -> tuple[RunStep, Message | None] | None:
    """The reply an earlier attempt at this run opened and did not finish, if any (its message
    is None when somebody deleted it meanwhile)."""
    step = await steps.current(conn, run.id)
    if step is None or step.step_details.type != "message_creation":
        return None
    message_id = step.step_details.message_creation.message_id
    try:
        return step, await messages.get(conn, run.thread_id, message_id)
    except NotFound:
        return step, None


async def dispatch(conn: asyncpg.Connection, calls: list[ToolCallRow]) -> None:
    """Send server-side calls to the tool-executor (keyed by thread: one thread stays in order)."""
    for call in calls:
        order = ExecuteToolCall(
            id=new_id("cmd"),
            run_id=call.run_id,
            thread_id=call.thread_id,
            tool_call_id=call.id,
            tool_type=call.type,
            name=call.name,
            arguments=call.arguments,
        )
        await outbox.enqueue(conn, topics.TOOL_CALLS, call.thread_id, order)


async def park(conn: asyncpg.Connection, lease: Lease, wait_seconds: float) -> None:
    """Release the run while server-side calls run; a result (or the sweeper) wakes it."""
    await conn.execute(
        "UPDATE runs SET lease_owner = NULL, lease_token = NULL, updated_at = now(),"
        " lease_expires_at = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND lease_token = $2",
        lease.run_id,
        lease.token,
        float(wait_seconds),
    )


async def write_tool_step(
    conn: asyncpg.Connection,
    run: Run,
    calls: list[dict[str, Any]],
    usage: dict[str, int],
    cause: str,
) -> tuple[RunStep, list[ToolCallRow]]:
    """A tool_calls step, in progress, with one row per call."""
    step = await steps.open_step(conn, run, "tool_calls", {"type": "tool_calls", "tool_calls": []})
    await outbox.emit(conn, "thread.run.step.created", run.thread_id, step, cause)
    await outbox.emit(conn, "thread.run.step.in_progress", run.thread_id, step, cause)
    await conn.execute("UPDATE run_steps SET turn_usage = $2 WHERE id = $1", step.id, usage)
    server = await toolcalls.server_side(conn, [c["name"] for c in calls])
    rows = await toolcalls.record(
        conn, run_id=run.id, thread_id=run.thread_id, step_id=step.id, calls=calls, server=server
    )
    row = await conn.fetchrow(
        "UPDATE run_steps SET step_details = $2 WHERE id = $1 RETURNING *",
        step.id,
        toolcalls.step_details(rows),
    )
    for index, call in enumerate(rows):
        # One delta per call: id, type and name once, the arguments whole (they are stored
        # before anything acts on them). Code is sent as the hosted tool sent it: an empty
        # call, then the input in fragments; its outputs follow when the executor is done.
        entries = [call.as_step_entry()]
        if call.type == "code_interpreter":
            code = entries[0]["code_interpreter"]["input"]
            entries[0]["code_interpreter"] = {"input": "", "outputs": []}
            entries += [
                {"type": "code_interpreter", "code_interpreter": {"input": fragment}}
                for fragment in code_fragments(code)
            ]
        for entry in entries:
            delta = toolcalls.step_delta(step.id, [{"index": index, **entry}])
            await outbox.emit(
                conn, "thread.run.step.delta", run.thread_id, delta, cause, run_id=run.id
            )
    return steps.render(dict(row)), rows


def code_fragments(code: str, size: int = 256) -> list[str]:
    """The code in pieces of whole lines, about `size` characters each."""
    fragments: list[str] = []
    for line in code.splitlines(keepends=True):
        if fragments and len(fragments[-1]) + len(line) <= size:
            fragments[-1] += line
        else:
            fragments.append(line)
    return fragments


async def require_action(
    conn: asyncpg.Connection, lease: Lease, client_calls: list[ToolCallRow], cause: str
) -> Run:
    """Hand the client-side calls to the client: `requires_action`."""
    action = {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {"tool_calls": [c.as_required_action() for c in client_calls]},
    }
    run = await runstate.transition(
        conn, lease.run_id, "requires_action", lease=lease, fields={"required_action": action}
    )
    if run is None:
        raise LeaseLost(lease.run_id)
    await conn.execute(
        "UPDATE runs SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
        " WHERE id = $1",
        lease.run_id,
    )
    await outbox.emit(conn, "thread.run.requires_action", run.thread_id, run, cause)
    return run


async def conclude(
    conn: asyncpg.Connection, lease: Lease, usage: dict[str, int], *, cut_off: bool
) -> tuple[Run, bool]:
    """End the run after a turn that called no tools, in one statement: lock the thread, add
    the turn's tokens to the run's total, and move the run to `completed` (or, `cut_off`,
    `incomplete`: max_completion_tokens) with that total as its usage; with it, whether the
    thread has a pending run to start (`threads.pending_run`, read under the lock). The caller
    emits the run's event, after its reply's."""
    fields = {"incomplete_details": {"reason": "max_completion_tokens"}} if cut_off else None
    row = await runstate.moved(conn, runstate.move(
        lease.run_id, "incomplete" if cut_off else "completed", lease=lease,
        fields=fields, spend=usage, locking_thread=lease.thread_id,
    ))  # fmt: skip
    if row is None:
        raise LeaseLost(lease.run_id)
    return runs.render(dict(row)), row["pending_run"]


async def end_incomplete(
    conn: asyncpg.Connection, lease: Lease, reason: str, total: dict[str, int]
) -> Run:
    """The run hit `max_prompt_tokens` or `max_completion_tokens`."""
    run = await runstate.transition(
        conn,
        lease.run_id,
        "incomplete",
        lease=lease,
        fields={"usage": total, "incomplete_details": {"reason": reason}},
    )
    if run is None:
        raise LeaseLost(lease.run_id)
    await outbox.emit(conn, "thread.run.incomplete", run.thread_id, run, lease.cause)
    return run


async def fail(
    conn: asyncpg.Connection, lease: Lease, thread_id: str, failure: ModelFailure
) -> Run:
    """The run failed: its open step fails too."""
    error = {"code": failure.code, "message": failure.message}
    step = await steps.current(conn, lease.run_id)
    if step is not None:
        code = "rate_limit_exceeded" if failure.code == "rate_limit_exceeded" else "server_error"
        closed = await steps.close(
            conn, step.id, "failed", last_error={"code": code, "message": failure.message}
        )
        await outbox.emit(conn, "thread.run.step.failed", thread_id, closed, lease.cause)
    spent = await conn.fetchval("SELECT spent FROM runs WHERE id = $1", lease.run_id)
    run = await runstate.transition(
        conn, lease.run_id, "failed", lease=lease, fields={"last_error": error, "usage": spent}
    )
    if run is None:
        raise LeaseLost(lease.run_id)
    await outbox.emit(conn, "thread.run.failed", thread_id, run, lease.cause)
    return run


async def expire(conn: asyncpg.Connection, run_id: str, thread_id: str) -> bool:
    """Expire an overdue run (status any active one, lease not held); False if it was not."""
    row = await conn.fetchrow(
        "SELECT coalesce(cause_event_id, id) AS cause, spent FROM runs WHERE id = $1", run_id
    )
    cause = row["cause"]
    run = await runstate.transition(conn, run_id, "expired", fields={"usage": row["spent"]})
    if run is None:
        return False
    step = await steps.current(conn, run_id)
    if step is not None and step.step_details.type == "message_creation":
        reply = await messages.finish(
            conn,
            step.step_details.message_creation.message_id,
            content=[],
            incomplete_reason="run_expired",
        )
        if reply is not None:  # None: the reply was deleted while the run wrote it
            await outbox.emit(conn, "thread.message.incomplete", thread_id, reply, cause)
    if step is not None:
        closed = await steps.close(conn, step.id, "expired")
        await outbox.emit(conn, "thread.run.step.expired", thread_id, closed, cause)
    await outbox.emit(conn, "thread.run.expired", thread_id, run, cause)
    return True
