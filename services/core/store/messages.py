"""SQL for messages."""

import json
from typing import Any

import asyncpg

from schemas.common import Page
from schemas.requests import ContentPart, MessageCreate, TextPart
from schemas.runs import RunStep
from schemas.threads import Message
from services.core import outbox
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.store import files, steps, vector_stores
from services.core.store.pagination import Order, page


def render(row: dict[str, Any]) -> Message:
    """A row as the wire object."""
    return Message.model_validate(row)


def content_parts(content: str | list[ContentPart]) -> list[dict[str, Any]]:
    """Request content (a string or parts) as stored message content."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": {"value": part.text, "annotations": []}})
        else:
            parts.append(part.model_dump(mode="json"))
    return parts


def insert_finished(first: int) -> str:
    """An `INSERT` of finished messages (user-written or injected) into the thread `$1`, from
    the arrays `finished_args` gives as parameters `$first` on, in array order (their `seq`
    follows it), `RETURNING *`. JSON values travel as text: in a `jsonb[]` parameter the
    driver would take a list for a dimension of the array."""
    p = [f"${first + i}" for i in range(7)]
    return (
        "INSERT INTO messages (id, thread_id, status, completed_at, role, content, attachments,"
        " metadata, source_event_source, source_event_id)"
        " SELECT id, $1, 'completed', epoch_now(), role, content::jsonb, attachments::jsonb,"
        " metadata::jsonb, src, eid"
        f" FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::text[],"
        f" {p[4]}::text[], {p[5]}::text[], {p[6]}::text[])"
        " WITH ORDINALITY AS u(id, role, content, attachments, metadata, src, eid, n)"
        " ORDER BY n RETURNING *"
    )


def finished_args(
    bodies: list[MessageCreate], source: tuple[str, str] | None = None
) -> list[list[Any]]:
    """The parameters of `insert_finished` for `bodies`; `source` is the (source, id) of the
    inbound event that brought them, if one did."""
    source_name, source_id = source or (None, None)
    return [
        [new_id("msg") for _ in bodies],
        [body.role for body in bodies],
        [json.dumps(content_parts(body.content)) for body in bodies],
        [
            json.dumps([a.model_dump(mode="json") for a in body.attachments or []])
            for body in bodies
        ],
        [json.dumps(body.metadata or {}) for body in bodies],
        [source_name for _ in bodies],
        [source_id for _ in bodies],
    ]


async def check_files(conn: asyncpg.Connection, bodies: list[MessageCreate]) -> None:
    """NotFound naming the first attached file that does not exist (no query for none)."""
    await files.existing(conn, [a.file_id for body in bodies for a in body.attachments or []])


async def created(
    conn: asyncpg.Connection,
    thread_id: str,
    body: MessageCreate,
    message: Message,
    cause: str | None,
) -> Message:
    """What follows a finished message's insert: its files put in the thread's store for
    file_search, and `thread.message.created`."""
    searchable = [
        a.file_id
        for a in body.attachments or []
        if any(tool.type == "file_search" for tool in a.tools)
    ]
    if searchable:
        await vector_stores.attach_to_thread(conn, thread_id, searchable)
    await outbox.emit(conn, "thread.message.created", thread_id, message, cause)
    return message


async def create(
    conn: asyncpg.Connection,
    thread_id: str,
    body: MessageCreate,
    *,
    cause: str | None = None,
    source: tuple[str, str] | None = None,
) -> Message:
    """Append a finished message (user-written or injected) to the thread; `source` is the
    (source, id) of the inbound event that brought it, if one did."""
    await check_files(conn, [body])
    row = await conn.fetchrow(insert_finished(2), thread_id, *finished_args([body], source))
    assert row is not None
    return await created(conn, thread_id, body, render(dict(row)), cause)


async def get(conn: asyncpg.Connection, thread_id: str, message_id: str) -> Message:
    """The message of that thread, or NotFound."""
    row = await conn.fetchrow(
        "SELECT * FROM messages WHERE id = $1 AND thread_id = $2", message_id, thread_id
    )
    if row is None:
        raise NotFound.of("message", message_id)
    return render(dict(row))


async def list_page(
    conn: asyncpg.Connection,
    thread_id: str,
    *,
    run_id: str | None,
    limit: int,
    order: Order,
    after: str | None,
    before: str | None,
) -> Page[Message]:
    """A page of the thread's messages, optionally only those one run wrote."""
    where, args = "thread_id = $1", [thread_id]
    if run_id is not None:
        where, args = "thread_id = $1 AND run_id = $2", [thread_id, run_id]
    return await page(
        conn,
        table="messages",
        where=where,
        args=list(args),
        render=render,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )


async def open_reply(
    conn: asyncpg.Connection,
    run: Any,
    content: list[dict[str, Any]],
    *,
    finished_with: dict[str, int] | None = None,
    incomplete_reason: str | None = None,
) -> tuple[RunStep, Message]:
    """Insert the run's reply and its `message_creation` step, in one statement: the step
    `in_progress`, the reply `in_progress` with no text yet (`content`: its images).

    `finished_with` (the step's usage): both are born finished, the reply whole (`content` all
    of it), `completed`, or `incomplete` with the reason; `steps.as_opened` and `as_opened`
    are them as their opening events show them."""
    status = "in_progress"
    if finished_with is not None:
        status = "completed" if incomplete_reason is None else "incomplete"
    details = None if incomplete_reason is None else {"reason": incomplete_reason}
    message_id = new_id("msg")
    step_details = {"type": "message_creation", "message_creation": {"message_id": message_id}}
    row = await conn.fetchrow(
        f"WITH s AS ({steps.INSERT} RETURNING *), m AS ("
        "INSERT INTO messages (id, thread_id, status, role, content, assistant_id, run_id,"
        " completed_at, incomplete_at, incomplete_details)"
        " VALUES ($8, $3, $10, 'assistant', $9, $4, $2,"
        " CASE WHEN $10 = 'completed' THEN epoch_now() END,"
        " CASE WHEN $10 = 'incomplete' THEN epoch_now() END, $11) RETURNING *)"
        " SELECT (SELECT to_json(s) FROM s) AS step, (SELECT to_json(m) FROM m) AS message",
        *steps.insert_args(run, "message_creation", step_details, finished_with),
        message_id, content, status, details,
    )  # fmt: skip
    assert row is not None
    return steps.render(row["step"]), render(row["message"])


def as_opened(message: Message, images: int) -> Message:
    """A reply born whole, as it was when it opened: in progress, with only its leading
    `images` parts (the images the code displayed)."""
    return message.model_copy(update={
        "status": "in_progress", "completed_at": None, "incomplete_at": None,
        "incomplete_details": None, "content": message.content[:images],
    })  # fmt: skip


async def finish(
    conn: asyncpg.Connection,
    message_id: str,
    *,
    content: list[dict[str, Any]],
    incomplete_reason: str | None = None,
) -> Message | None:
    """Close a reply: `completed`, or `incomplete` with the reason; None if it was deleted (or
    closed already)."""
    if incomplete_reason is None:
        sql = "status = 'completed', completed_at = epoch_now(), incomplete_details = NULL"
        args: list[Any] = [message_id, content]
    else:
        sql = "status = 'incomplete', incomplete_at = epoch_now(), incomplete_details = $3"
        args = [message_id, content, {"reason": incomplete_reason}]
    row = await conn.fetchrow(
        f"UPDATE messages SET content = $2, {sql} WHERE id = $1 AND status = 'in_progress'"
        " RETURNING *",
        *args,
    )
    return render(dict(row)) if row is not None else None
