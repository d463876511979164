"""SQL for the files of vector stores and their batches; each attachment orders an ingestion."""

from typing import Any, Literal

import asyncpg

from schemas import topics
from schemas.common import Page
from schemas.events import IndexFile
from schemas.vector_stores import (
    BatchFile,
    FileCounts,
    StaticChunking,
    StaticChunkingStrategy,
    VectorStoreFile,
    VectorStoreFileBatch,
    resolve_chunking,
)
from services.core import outbox
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.store.pagination import Order, page

Status = Literal["in_progress", "completed", "failed", "cancelled"]


def render(row: dict[str, Any]) -> VectorStoreFile:
    """A `vector_store_files` (or `_v`) row as the wire object: its id is the file's."""
    return VectorStoreFile.model_validate({**row, "id": row.get("file_id", row.get("id"))})


def render_batch(row: dict[str, Any]) -> VectorStoreFileBatch:
    """A `vector_store_file_batches_v` row as the wire object."""
    counts = FileCounts(**{k: int(row[k]) for k in FileCounts.model_fields})
    return VectorStoreFileBatch.model_validate({**row, "file_counts": counts})


async def emit(
    conn: asyncpg.Connection, status: Status, row: VectorStoreFile, cause: str | None
) -> None:
    """`vector_store.file.<status>` on `threadbus.events`, keyed by the store's id."""
    await outbox.emit(conn, f"vector_store.file.{status}", row.vector_store_id, row, cause)


async def attach(
    conn: asyncpg.Connection,
    store_id: str,
    file_id: str,
    *,
    attributes: dict[str, Any] | None,
    chunking: StaticChunking,
    batch_id: str | None = None,
    cause: str | None = None,
) -> VectorStoreFile:
    """Put the file in the store, `in_progress`, and order its ingestion.

    A file already in the store is indexed again from scratch (a new `generation`).
    """
    strategy = StaticChunkingStrategy(static=chunking).model_dump(mode="json")
    row = await conn.fetchrow(
        "INSERT INTO vector_store_files (vector_store_id, file_id, attributes,"
        " chunking_strategy, batch_id) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (vector_store_id, file_id) DO UPDATE SET status = 'in_progress',"
        " last_error = NULL, usage_bytes = 0, content = NULL, attributes = EXCLUDED.attributes,"
        " chunking_strategy = EXCLUDED.chunking_strategy, batch_id = EXCLUDED.batch_id,"
        " generation = vector_store_files.generation + 1, lease_token = NULL,"
        " lease_expires_at = NULL, attempts = 0, updated_at = now()"
        " RETURNING *",
        store_id,
        file_id,
        attributes,
        strategy,
        batch_id,
    )
    assert row is not None
    if row["generation"] > 1:
        await conn.execute(
            "DELETE FROM chunks WHERE vector_store_id = $1 AND file_id = $2", store_id, file_id
        )
    order = IndexFile(
        id=new_id("cmd"), vector_store_id=store_id, file_id=file_id, generation=row["generation"]
    )
    await outbox.enqueue(conn, topics.INGEST, store_id, order)
    attached = render(dict(row))
    await emit(conn, "in_progress", attached, cause)
    return attached


async def get(conn: asyncpg.Connection, store_id: str, file_id: str) -> VectorStoreFile:
    """The file of that store, or NotFound."""
    row = await conn.fetchrow(
        "SELECT * FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2",
        store_id,
        file_id,
    )
    if row is None:
        raise NotFound.of("file", file_id)
    return render(dict(row))


async def content(conn: asyncpg.Connection, store_id: str, file_id: str) -> str:
    """The file's parsed text ("" until it is indexed)."""
    await get(conn, store_id, file_id)
    text = await conn.fetchval(
        "SELECT content FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2",
        store_id,
        file_id,
    )
    return str(text or "")


async def set_attributes(
    conn: asyncpg.Connection, store_id: str, file_id: str, attributes: dict[str, Any] | None
) -> VectorStoreFile:
    """Replace the file's attributes (and its chunks', which filters read)."""
    row = await conn.fetchrow(
        "UPDATE vector_store_files SET attributes = $3, updated_at = now()"
        " WHERE vector_store_id = $1 AND file_id = $2 RETURNING *",
        store_id,
        file_id,
        attributes,
    )
    if row is None:
        raise NotFound.of("file", file_id)
    await conn.execute(
        "UPDATE chunks SET attributes = $3 WHERE vector_store_id = $1 AND file_id = $2",
        store_id,
        file_id,
        attributes,
    )
    return render(dict(row))


async def detach(conn: asyncpg.Connection, store_id: str, file_id: str) -> None:
    """Remove the file (and its chunks) from the store; the File stays."""
    deleted = await conn.fetchval(
        "DELETE FROM vector_store_files WHERE vector_store_id = $1 AND file_id = $2"
        " RETURNING file_id",
        store_id,
        file_id,
    )
    if deleted is None:
        raise NotFound.of("file", file_id)


async def list_page(
    conn: asyncpg.Connection,
    store_id: str,
    *,
    status: Status | None,
    batch_id: str | None = None,
    limit: int,
    order: Order,
    after: str | None,
    before: str | None,
) -> Page[VectorStoreFile]:
    """A page of the store's files, optionally of one status or one batch."""
    clauses, args = ["vector_store_id = $1"], [store_id]
    if status is not None:
        args.append(status)
        clauses.append(f"status = ${len(args)}")
    if batch_id is not None:
        args.append(batch_id)
        clauses.append(f"batch_id = ${len(args)}")
    return await page(
        conn,
        table="vector_store_files_v",
        where=" AND ".join(clauses),
        args=list(args),
        render=render,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )


async def create_batch(
    conn: asyncpg.Connection, store_id: str, entries: list[BatchFile], *, cause: str | None = None
) -> VectorStoreFileBatch:
    """A batch with its files attached (each ingested on its own)."""
    batch_id = new_id("vsfb")
    await conn.execute(
        "INSERT INTO vector_store_file_batches (id, vector_store_id) VALUES ($1, $2)",
        batch_id,
        store_id,
    )
    unique = {entry.file_id: entry for entry in entries}
    for entry in unique.values():
        await attach(
            conn,
            store_id,
            entry.file_id,
            attributes=entry.attributes,
            chunking=resolve_chunking(entry.chunking_strategy),
            batch_id=batch_id,
            cause=cause,
        )
    return await get_batch(conn, store_id, batch_id)


async def get_batch(conn: asyncpg.Connection, store_id: str, batch_id: str) -> VectorStoreFileBatch:
    """The batch of that store, or NotFound."""
    row = await conn.fetchrow(
        "SELECT * FROM vector_store_file_batches_v WHERE id = $1 AND vector_store_id = $2",
        batch_id,
        store_id,
    )
    if row is None:
        raise NotFound.of("file batch", batch_id)
    return render_batch(dict(row))


async def cancel_batch(
    conn: asyncpg.Connection, store_id: str, batch_id: str
) -> VectorStoreFileBatch:
    """Files of the batch not yet indexed become `cancelled` (their partial chunks go)."""
    marked = await conn.fetchval(
        "UPDATE vector_store_file_batches SET cancelled_at = coalesce(cancelled_at, epoch_now())"
        " WHERE id = $1 AND vector_store_id = $2 RETURNING id",
        batch_id,
        store_id,
    )
    if marked is None:
        raise NotFound.of("file batch", batch_id)
    rows = await conn.fetch(
        "UPDATE vector_store_files SET status = 'cancelled', lease_token = NULL,"
        " lease_expires_at = NULL, updated_at = now()"
        " WHERE batch_id = $1 AND status = 'in_progress' RETURNING *",
        batch_id,
    )
    for row in rows:
        await conn.execute(
            "DELETE FROM chunks WHERE vector_store_id = $1 AND file_id = $2",
            store_id,
            row["file_id"],
        )
        await emit(conn, "cancelled", render(dict(row)), None)
    return await get_batch(conn, store_id, batch_id)
