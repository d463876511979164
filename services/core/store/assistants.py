"""SQL for assistants."""

from typing import Any

import asyncpg

from schemas.assistants import Assistant
from schemas.common import Page
from schemas.requests import AssistantCreate, AssistantUpdate
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.projects import MINE
from services.core.store import vector_stores
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
_NOT_NULL = {
    "tools": [],
    "tool_resources": {},
    "metadata": {},
    "response_format": "auto",
    "temperature": 1.0,
    "top_p": 1.0,
}


def render(row: dict[str, Any]) -> Assistant:
    """A row as the wire object."""
    return Assistant.model_validate(row)


def _values(body: AssistantCreate, fields: set[str]) -> dict[str, Any]:
    dumped = body.model_dump(mode="json", by_alias=True, include=fields)
    values: dict[str, Any] = {
        k: (_NOT_NULL[k] if v is None and k in _NOT_NULL else v) for k, v in dumped.items()
    }
    if "tools" in values:
        values["tools"] = [_with_defaults(tool) for tool in values["tools"]]
    return values


def _with_defaults(tool: dict[str, Any]) -> dict[str, Any]:
    """Fill in what the hosted API filled in: file_search's ranking options, no null fields."""
    if tool["type"] == "file_search":
        options = tool.get("file_search") or {}
        options = {k: v for k, v in options.items() if v is not None}
        options.setdefault(
            "ranking_options", {"ranker": "default_2024_08_21", "score_threshold": 0.0}
        )
        return {"type": "file_search", "file_search": options}
    if tool["type"] == "function":
        function = {k: v for k, v in tool["function"].items() if v is not None}
        function.setdefault("strict", False)
        return {"type": "function", "function": function}
    return tool


async def _resources_for_tools(conn: asyncpg.Connection, assistant_id: str) -> None:
    """An assistant with code_interpreter gets `tool_resources.code_interpreter.file_ids = []`."""
    await conn.execute(
        "UPDATE assistants SET tool_resources = tool_resources"
        " || jsonb_build_object('code_interpreter', coalesce(tool_resources->'code_interpreter',"
        " '{\"file_ids\": []}'::jsonb))"
        ' WHERE id = $1 AND tools @> \'[{"type": "code_interpreter"}]\'::jsonb',
        assistant_id,
    )


async def create(conn: asyncpg.Connection, body: AssistantCreate) -> Assistant:
    """Insert an assistant."""
    values = _values(body, set(_COLUMNS))
    values["tool_resources"] = await vector_stores.resolve_resources(
        conn, body.tool_resources, for_thread=False
    )
    values.setdefault("tools", [])
    cols = ["id", *values]
    row = await conn.fetchrow(
        f"INSERT INTO assistants ({', '.join(cols)})"
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(cols)))}) RETURNING *",
        new_id("asst"),
        *values.values(),
    )
    assert row is not None
    await _resources_for_tools(conn, row["id"])
    return await get(conn, row["id"])


async def get(conn: asyncpg.Connection, assistant_id: str) -> Assistant:
    """The assistant, or NotFound."""
    row = await conn.fetchrow(f"SELECT * FROM assistants WHERE id = $1 AND {MINE}", assistant_id)
    if row is None:
        raise NotFound.of("assistant", assistant_id)
    return render(dict(row))


async def update(conn: asyncpg.Connection, assistant_id: str, body: AssistantUpdate) -> Assistant:
    """Change the fields the caller sent; `null` clears a nullable field."""
    values = _values(body, body.model_fields_set & set(_COLUMNS))
    if values.get("model", "") is None:
        values.pop("model")
    if "tool_resources" in values:
        values["tool_resources"] = await vector_stores.resolve_resources(
            conn, body.tool_resources, for_thread=False
        )
    if not values:
        return await get(conn, assistant_id)
    sets = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(values))
    row = await conn.fetchrow(
        f"UPDATE assistants SET {sets} WHERE id = $1 AND {MINE} RETURNING *",
        assistant_id,
        *values.values(),
    )
    if row is None:
        raise NotFound.of("assistant", assistant_id)
    await _resources_for_tools(conn, assistant_id)
    return await get(conn, assistant_id)


async def delete(conn: asyncpg.Connection, assistant_id: str) -> None:
    """Delete the assistant; runs keep their snapshot of it."""
    if (
        await conn.fetchval(
            f"DELETE FROM assistants WHERE id = $1 AND {MINE} RETURNING id", assistant_id
        )
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
        where=MINE,
        args=[],
        render=render,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )
