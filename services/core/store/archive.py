"""SQL for the event archive: append-only, idempotent, ordered per thread."""

from collections.abc import AsyncIterator
from typing import Any

import asyncpg

_MESSAGE_FINAL = ("thread.message.completed", "thread.message.incomplete")


async def append_many(conn: asyncpg.Connection, events: list[dict[str, Any]]) -> int:
    """Archive outbound events in one statement, in the order given; returns how many were
    new (an event archived before is skipped)."""
    stored = await conn.fetchval(
        "WITH new AS (INSERT INTO archive (thread_id, event_id, type, event)"
        " SELECT t, i, y, e FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])"
        " WITH ORDINALITY AS r(t, i, y, e, n) ORDER BY n"
        " ON CONFLICT (event_id) DO NOTHING RETURNING 1) SELECT count(*) FROM new",
        [event.get("subject") or "" for event in events],
        [event["id"] for event in events],
        [event["type"] for event in events],
        events,
    )
    return int(stored)


async def events(conn: asyncpg.Connection, thread_id: str) -> AsyncIterator[dict[str, Any]]:
    """Every archived event of the thread, in arrival order."""
    async with conn.transaction():
        async for row in conn.cursor(
            "SELECT event FROM archive WHERE thread_id = $1 ORDER BY seq", thread_id
        ):
            yield row["event"]


def _text(message: dict[str, Any]) -> str:
    return "\n".join(
        part["text"]["value"] for part in message.get("content", []) if part.get("type") == "text"
    )


async def transcript(conn: asyncpg.Connection, thread_id: str) -> AsyncIterator[dict[str, Any]]:
    """The thread's conversation: each message once, in order, in its final form."""
    async for event in events(conn, thread_id):
        message = event["data"]
        user_written = event["type"] == "thread.message.created" and message["role"] == "user"
        if user_written or event["type"] in _MESSAGE_FINAL:
            yield {
                "id": message["id"],
                "created_at": message["created_at"],
                "role": message["role"],
                "status": message["status"],
                "text": _text(message),
                "content": message["content"],
                "assistant_id": message.get("assistant_id"),
                "run_id": message.get("run_id"),
                "event_id": event["id"],
                "causationid": event.get("causationid"),
            }
