"""SQL for assistants."""

from typing import Any

import asyncpg

from schemas.assistants import Assistant
from schemas.common import Page
from schemas.requests import AssistantCreate, AssistantUpdate
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.store.pagination import Order, page

_COLUMNS = (
    "name",
    "description",
    "model",
    "instructions",
    "tools",
    "tool_resources",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
    "reasoning_effort",
)
_NOT_NULL = {"tools": [], "tool_resources": {}, "metadata": {}, "response_format": "auto"}


def render(row: dict[str, Any]) -> Assistant:
    """A row as the wire object."""
    return Assistant.model_validate(row)


def _values(body: AssistantCreate, fields: set[str]) -> dict[str, Any]:
    dumped = body.model_dump(mode="json", by_alias=True, include=fields)
    return {k: (_NOT_NULL[k] if v is None and k in _NOT_NULL else v) for k, v in dumped.items()}


async def create(conn: asyncpg.Connection, body: AssistantCreate) -> Assistant:
    """Insert an assistant."""
    values = _values(body, set(_COLUMNS))
    values.setdefault("tools", [])
    cols = ["id", *values]
    row = await conn.fetchrow(
        f"INSERT INTO assistants ({', '.join(cols)})"
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(cols)))}) RETURNING *",
        new_id("asst"),
        *values.values(),
    )
    assert row is not None
    return render(dict(row))


async def get(conn: asyncpg.Connection, assistant_id: str) -> Assistant:
    """The assistant, or NotFound."""
    row = await conn.fetchrow("SELECT * FROM assistants WHERE id = $1", assistant_id)
    if row is None:
        raise NotFound.of("assistant", assistant_id)
    return render(dict(row))


async def update(conn: asyncpg.Connection, assistant_id: str, body: AssistantUpdate) -> Assistant:
    """Change the fields the caller sent; `null` clears a nullable field."""
    values = _values(body, body.model_fields_set & set(_COLUMNS))
    if values.get("model", "") is None:
        values.pop("model")
    if not values:
        return await get(conn, assistant_id)
    sets = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(values))
    row = await conn.fetchrow(
        f"UPDATE assistants SET {sets} WHERE id = $1 RETURNING *", assistant_id, *values.values()
    )
    if row is None:
        raise NotFound.of("assistant", assistant_id)
    return render(dict(row))


async def delete(conn: asyncpg.Connection, assistant_id: str) -> None:
    """Delete the assistant; runs keep their snapshot of it."""
    if (
        await conn.fetchval("DELETE FROM assistants WHERE id = $1 RETURNING id", assistant_id)
        is None
    ):
        raise NotFound.of("assistant", assistant_id)


async def list_page(
    conn: asyncpg.Connection, *, limit: int, order: Order, after: str | None, before: str | None
) -> Page[Assistant]:
    """A page of assistants."""
    return await page(
        conn,
        table="assistants",
        where="TRUE",
        args=[],
        render=render,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )
