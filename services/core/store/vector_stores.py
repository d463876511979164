"""SQL for vector stores: creation (with files), reads with derived counts, expiry, activity."""

from typing import Any

import asyncpg

from schemas.common import Page
from schemas.vector_stores import (
    ExpiresAfter,
    FileCounts,
    StaticChunking,
    ToolResourcesParam,
    VectorStore,
    VectorStoreCreate,
    VectorStoreUpdate,
    resolve_chunking,
)
from services.core.errors import InvalidRequest, NotFound
from services.core.ids import new_id
from services.core.projects import MINE
from services.core.store import files, vector_store_files
from services.core.store.pagination import Order, page

THREAD_STORE_EXPIRY = ExpiresAfter(anchor="last_active_at", days=7)
"""What the hosted API gave vector stores made for a thread (attachments, thread helpers)."""


def counts(row: dict[str, Any]) -> FileCounts:
    """The `file_counts` of a view row."""
    return FileCounts(**{k: int(row[k]) for k in FileCounts.model_fields})


def render(row: dict[str, Any]) -> VectorStore:
    """A `vector_stores_v` row as the wire object."""
    return VectorStore.model_validate({**row, "file_counts": counts(row)})


async def create(
    conn: asyncpg.Connection,
    body: VectorStoreCreate,
    *,
    expires_after: ExpiresAfter | None = None,
    cause: str | None = None,
) -> VectorStore:
    """Insert a store and attach its files (ingested asynchronously)."""
    file_ids = list(dict.fromkeys(body.file_ids or []))
    await files.existing(conn, file_ids)
    expiry = body.expires_after or expires_after
    store_id = new_id("vs")
    await conn.execute(
        "INSERT INTO vector_stores (id, name, description, metadata, expires_after)"
        " VALUES ($1, $2, $3, $4, $5)",
        store_id,
        body.name or "",
        body.description,
        body.metadata or {},
        expiry.model_dump(mode="json") if expiry else None,
    )
    chunking = resolve_chunking(body.chunking_strategy)
    for file_id in file_ids:
        await vector_store_files.attach(
            conn, store_id, file_id, attributes=None, chunking=chunking, cause=cause
        )
    return await get(conn, store_id)


async def create_for_files(
    conn: asyncpg.Connection,
    file_ids: list[str],
    chunking: StaticChunking | None,
    *,
    metadata: dict[str, str] | None = None,
    expires_after: ExpiresAfter | None = None,
) -> str:
    """A store holding these files (tool-resource helpers, message attachments); its id."""
    store_id = new_id("vs")
    await files.existing(conn, file_ids)
    await conn.execute(
        "INSERT INTO vector_stores (id, metadata, expires_after) VALUES ($1, $2, $3)",
        store_id,
        metadata or {},
        expires_after.model_dump(mode="json") if expires_after else None,
    )
    for file_id in dict.fromkeys(file_ids):
        await vector_store_files.attach(
            conn, store_id, file_id, attributes=None, chunking=chunking or resolve_chunking(None)
        )
    return store_id


async def resolve_resources(
    conn: asyncpg.Connection, params: ToolResourcesParam | None, *, for_thread: bool
) -> dict[str, Any]:
    """Tool resources as stored: stores the request asks to create (`file_search.vector_stores`)
    are created (a thread's expire after 7 days idle, as hosted) and named by id."""
    if params is None:
        return {}
    stored: dict[str, Any] = params.model_dump(mode="json", exclude_none=True)
    if params.code_interpreter is not None:
        await files.existing(conn, params.code_interpreter.file_ids)
    search = params.file_search
    if search is None:
        return stored
    ids = list(search.vector_store_ids)
    for store_id in ids:
        await get(conn, store_id)
    for helper in search.vector_stores or []:
        ids.append(
            await create_for_files(
                conn,
                helper.file_ids or [],
                resolve_chunking(helper.chunking_strategy),
                metadata=helper.metadata,
                expires_after=THREAD_STORE_EXPIRY if for_thread else None,
            )
        )
    if len(ids) > 1:
        raise InvalidRequest(
            "Invalid 'tool_resources.file_search': at most one vector store may be attached.",
            param="tool_resources.file_search.vector_store_ids",
        )
    stored["file_search"] = {"vector_store_ids": ids}
    return stored


async def attach_to_thread(conn: asyncpg.Connection, thread_id: str, file_ids: list[str]) -> str:
    """Put files attached to a message in the thread's own store, made on first need."""
    resources = await conn.fetchval(
        "SELECT tool_resources FROM threads WHERE id = $1 FOR UPDATE", thread_id
    )
    existing = ((resources or {}).get("file_search") or {}).get("vector_store_ids") or []
    if existing:
        store_id = str(existing[0])
        await files.existing(conn, file_ids)
        for file_id in dict.fromkeys(file_ids):
            await vector_store_files.attach(
                conn, store_id, file_id, attributes=None, chunking=resolve_chunking(None)
            )
        return store_id
    store_id = await create_for_files(conn, file_ids, None, expires_after=THREAD_STORE_EXPIRY)
    await conn.execute(
        "UPDATE threads SET tool_resources = tool_resources"
        " || jsonb_build_object('file_search', jsonb_build_object('vector_store_ids',"
        " jsonb_build_array($2::text))) WHERE id = $1",
        thread_id,
        store_id,
    )
    return store_id


async def get(conn: asyncpg.Connection, store_id: str, *, lock: bool = False) -> VectorStore:
    """The store, or NotFound; `lock` holds its row for the transaction."""
    if lock:
        await conn.execute(
            f"SELECT 1 FROM vector_stores WHERE id = $1 AND {MINE} FOR UPDATE", store_id
        )
    row = await conn.fetchrow(f"SELECT * FROM vector_stores_v WHERE id = $1 AND {MINE}", store_id)
    if row is None:
        raise NotFound.of("vector store", store_id)
    return render(dict(row))


async def usable(conn: asyncpg.Connection, store_ids: list[str]) -> list[VectorStore]:
    """The stores, each existing and not expired (NotFound / InvalidRequest otherwise)."""
    stores = [await get(conn, store_id) for store_id in store_ids]
    for store in stores:
        if store.status == "expired":
            raise InvalidRequest(
                f"Vector store {store.id!r} has expired (at {store.expires_at}); create a new"
                " one or set a longer 'expires_after'."
            )
    return stores


async def of_run(
    conn: asyncpg.Connection, thread_id: str, assistant_id: str
) -> tuple[list[str], list[str]]:
    """The vector store ids a run searches: the assistant's, then the thread's."""
    row = await conn.fetchrow(
        "SELECT a.tool_resources -> 'file_search' -> 'vector_store_ids' AS assistant,"
        " t.tool_resources -> 'file_search' -> 'vector_store_ids' AS thread"
        " FROM threads AS t LEFT JOIN assistants AS a ON a.id = $2 WHERE t.id = $1",
        thread_id,
        assistant_id,
    )
    if row is None:
        return [], []
    return list(row["assistant"] or []), list(row["thread"] or [])


async def touch(conn: asyncpg.Connection, store_ids: list[str]) -> None:
    """The stores were used now (their expiry counts from here)."""
    await conn.execute(
        "UPDATE vector_stores SET last_active_at = epoch_now() WHERE id = ANY($1::text[])",
        store_ids,
    )


async def update(conn: asyncpg.Connection, store_id: str, body: VectorStoreUpdate) -> VectorStore:
    """Change what the caller sent; `expires_after: null` removes the policy."""
    store = await get(conn, store_id, lock=True)
    sets: dict[str, Any] = {}
    if "name" in body.model_fields_set:
        sets["name"] = body.name or ""
    if "metadata" in body.model_fields_set:
        sets["metadata"] = body.metadata or {}
    if "expires_after" in body.model_fields_set:
        sets["expires_after"] = body.expires_after.model_dump() if body.expires_after else None
    if not sets:
        return store
    assignments = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(sets))
    await conn.execute(
        f"UPDATE vector_stores SET {assignments} WHERE id = $1", store_id, *sets.values()
    )
    return await get(conn, store_id)


async def delete(conn: asyncpg.Connection, store_id: str) -> None:
    """Delete the store with its chunks (the files themselves stay)."""
    if (
        await conn.fetchval(
            f"DELETE FROM vector_stores WHERE id = $1 AND {MINE} RETURNING id", store_id
        )
        is None
    ):
        raise NotFound.of("vector store", store_id)


async def list_page(
    conn: asyncpg.Connection, *, limit: int, order: Order, after: str | None, before: str | None
) -> Page[VectorStore]:
    """A page of vector stores."""
    return await page(
        conn,
        table="vector_stores_v",
        where=MINE,
        args=[],
        render=render,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )
