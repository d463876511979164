"""SQL for run steps."""

import functools
from typing import Any

import asyncpg

from schemas.common import Page
from schemas.runs import RunStep
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.store.pagination import Order, page


def render(row: dict[str, Any], *, with_content: bool = False) -> RunStep:
    """A row as the wire object.

    file_search results carry the text they found only when asked for (`include[]` on the
    steps endpoints); everywhere else (events, default reads) it is left out, as hosted.
    """
    step = RunStep.model_validate(row)
    if with_content or step.step_details.type != "tool_calls":
        return step
    for call in step.step_details.tool_calls:
        for result in (call.get("file_search") or {}).get("results") or []:
            result.pop("content", None)
    return step


async def open_step(
    conn: asyncpg.Connection,
    run: Any,
    type_: str,
    details: dict[str, Any],
    *,
    completed_with: dict[str, int] | None = None,
) -> RunStep:
    """Insert the run's next step, `in_progress`; (run_id, step_index) is unique.

    `completed_with` (its usage): the step is born `completed`, for work that opens and ends
    in one transaction (`as_opened` is the step as its opening events show it)."""
    row = await conn.fetchrow(
        f"{INSERT} RETURNING *", *insert_args(run, type_, details, completed_with)
    )
    assert row is not None
    return render(dict(row))


INSERT = (
    "INSERT INTO run_steps (id, run_id, thread_id, assistant_id, step_index, type, status,"
    " step_details, usage, completed_at) VALUES ($1, $2, $3, $4,"
    " (SELECT coalesce(max(step_index) + 1, 0) FROM run_steps WHERE run_id = $2),"
    " $5, CASE WHEN $7::jsonb IS NULL THEN 'in_progress' ELSE 'completed' END, $6, $7,"
    " CASE WHEN $7::jsonb IS NULL THEN NULL ELSE epoch_now() END)"
)
"""The insert of `open_step`, parameters $1-$7 from `insert_args` (the run's id is $2, its
thread's $3, its assistant's $4): a statement that writes more starts with it."""


def insert_args(
    run: Any, type_: str, details: dict[str, Any], completed_with: dict[str, int] | None
) -> tuple[Any, ...]:
    """The parameters of `INSERT`."""
    return (new_id("step"), run.id, run.thread_id, run.assistant_id, type_, details,
            completed_with)  # fmt: skip


def as_opened(step: RunStep) -> RunStep:
    """A step born finished, as it was when it opened."""
    return step.model_copy(update={"status": "in_progress", "completed_at": None, "usage": None})


async def current(conn: asyncpg.Connection, run_id: str) -> RunStep | None:
    """The run's step still in progress, if any (what a re-driven run resumes)."""
    row = await conn.fetchrow(
        "SELECT * FROM run_steps WHERE run_id = $1 AND status = 'in_progress'"
        " ORDER BY step_index DESC LIMIT 1",
        run_id,
    )
    return render(dict(row)) if row is not None else None


async def get(
    conn: asyncpg.Connection,
    thread_id: str,
    run_id: str,
    step_id: str,
    *,
    with_content: bool = False,
) -> RunStep:
    """The step of that run, or NotFound."""
    row = await conn.fetchrow(
        "SELECT * FROM run_steps WHERE id = $1 AND run_id = $2 AND thread_id = $3",
        step_id,
        run_id,
        thread_id,
    )
    if row is None:
        raise NotFound.of("run step", step_id)
    return render(dict(row), with_content=with_content)


async def list_page(
    conn: asyncpg.Connection,
    thread_id: str,
    run_id: str,
    *,
    limit: int,
    order: Order,
    after: str | None,
    before: str | None,
    with_content: bool = False,
) -> Page[RunStep]:
    """A page of the run's steps."""
    return await page(
        conn,
        table="run_steps",
        where="run_id = $1 AND thread_id = $2",
        args=[run_id, thread_id],
        render=functools.partial(render, with_content=with_content),
        limit=limit,
        order=order,
        after=after,
        before=before,
    )


async def close(
    conn: asyncpg.Connection,
    step_id: str,
    status: str,
    *,
    usage: dict[str, int] | None = None,
    last_error: dict[str, str] | None = None,
    step_details: dict[str, Any] | None = None,
) -> RunStep:
    """Move a step to a final status, stamping the matching `<status>_at` column."""
    stamp = {
        "completed": "completed_at",
        "failed": "failed_at",
        "cancelled": "cancelled_at",
        "expired": "expired_at",
    }[status]
    row = await conn.fetchrow(
        f"UPDATE run_steps SET status = $2, {stamp} = epoch_now(),"
        " usage = coalesce($3, turn_usage, usage), last_error = $4,"
        " step_details = coalesce($5, step_details) WHERE id = $1 RETURNING *",
        step_id,
        status,
        usage,
        last_error,
        step_details,
    )
    assert row is not None
    return render(dict(row))
