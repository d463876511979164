"""SQL for threads."""

from typing import Any

import asyncpg

from schemas.requests import ThreadCreate, ThreadUpdate
from schemas.threads import Thread
from services.core import outbox
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.projects import MINE
from services.core.store import messages, vector_stores


def render(row: dict[str, Any]) -> Thread:
    """A row as the wire object."""
    return Thread.model_validate(row)


async def create(
    conn: asyncpg.Connection,
    body: ThreadCreate,
    *,
    cause: str | None = None,
    thread_id: str | None = None,
    for_run: str | None = None,
) -> Thread:
    """Insert a thread and its initial messages, in array order.

    `for_run` marks `thread.created` as the first event of that run's stream.
    """
    resources = await vector_stores.resolve_resources(conn, body.tool_resources, for_thread=True)
    bodies = body.messages or []
    await messages.check_files(conn, bodies)
    row = await conn.fetchrow(
        "WITH t AS (INSERT INTO threads (id, metadata, tool_resources) VALUES ($1, $2, $3)"
        f" RETURNING *), m AS ({messages.insert_finished(4)})"
        " SELECT (SELECT to_json(t) FROM t) AS thread,"
        " (SELECT json_agg(m ORDER BY m.seq) FROM m) AS messages",
        thread_id or new_id("thread"),
        body.metadata or {},
        resources,
        *messages.finished_args(bodies),
    )  # the thread and its messages in one statement (the rows back as JSON)
    assert row is not None
    thread = render(row["thread"])
    await outbox.emit(conn, "thread.created", thread.id, thread, cause, run_id=for_run)
    for message, row_of in zip(bodies, row["messages"] or [], strict=True):
        await messages.created(conn, thread.id, message, messages.render(row_of), cause)
    return thread


_ENSURE = (
    "WITH made AS (INSERT INTO threads (id) VALUES ($1) ON CONFLICT (id) DO NOTHING RETURNING *),"
    f" held AS (SELECT * FROM threads WHERE id = $1 AND {MINE}"
    "  AND NOT EXISTS (SELECT 1 FROM made) FOR UPDATE)"
    " SELECT true AS made, * FROM made UNION ALL SELECT false AS made, * FROM held"
)
"""Create the thread, or lock it if it is there (and this project's): one round trip either way.

Both parts see the snapshot from before the statement, so a thread another transaction created
and committed while the insert waited on it is in neither (`ensure` then reads it again)."""


async def ensure(conn: asyncpg.Connection, thread_id: str, *, cause: str | None) -> Thread:
    """The thread with this id, created if it does not exist yet; locked for this transaction."""
    row = await conn.fetchrow(_ENSURE, thread_id)
    if row is None:
        return await get(conn, thread_id, lock=True)  # NotFound for another project's
    data = dict(row)
    made = data.pop("made")
    thread = render(data)
    if made:
        await outbox.emit(conn, "thread.created", thread.id, thread, cause)
    return thread


async def get(conn: asyncpg.Connection, thread_id: str, *, lock: bool = False) -> Thread:
    """The thread, or NotFound; `lock` holds its row until the transaction ends."""
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(f"SELECT * FROM threads WHERE id = $1 AND {MINE}{suffix}", thread_id)
    if row is None:
        raise NotFound.of("thread", thread_id)
    return render(dict(row))


async def update(conn: asyncpg.Connection, thread_id: str, body: ThreadUpdate) -> Thread:
    """Replace metadata and/or tool resources, as sent."""
    sets: dict[str, Any] = {}
    if "metadata" in body.model_fields_set:
        sets["metadata"] = body.metadata or {}
    if "tool_resources" in body.model_fields_set:
        sets["tool_resources"] = await vector_stores.resolve_resources(
            conn, body.tool_resources, for_thread=True
        )
    if not sets:
        return await get(conn, thread_id)
    assignments = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(sets))
    row = await conn.fetchrow(
        f"UPDATE threads SET {assignments} WHERE id = $1 AND {MINE} RETURNING *",
        thread_id,
        *sets.values(),
    )
    if row is None:
        raise NotFound.of("thread", thread_id)
    return render(dict(row))


async def delete(conn: asyncpg.Connection, thread_id: str) -> None:
    """Delete the thread with its messages, runs and steps."""
    deleted = await conn.fetchval(
        f"DELETE FROM threads WHERE id = $1 AND {MINE} RETURNING id", thread_id
    )
    if deleted is None:
        raise NotFound.of("thread", thread_id)
