"""SQL for files (their metadata; the bytes are in the blob store under `blob_key`)."""

from typing import Any

import asyncpg

from schemas.common import Page
from schemas.files import FileObject
from services.core.errors import NotFound
from services.core.projects import MINE
from services.core.store.pagination import Order, page

_LIVE = f"(expires_at IS NULL OR expires_at > epoch_now()) AND {MINE}"
"""A file past its `expires_at` is gone, as in the hosted API (and another project's is
not there)."""


def render(row: dict[str, Any]) -> FileObject:
    """A row as the wire object."""
    return FileObject.model_validate(row)


async def create(
    conn: asyncpg.Connection,
    *,
    file_id: str,
    filename: str,
    purpose: str,
    size: int,
    blob_key: str,
    expires_seconds: int | None = None,
) -> FileObject:
    """Record a stored file."""
    row = await conn.fetchrow(
        "INSERT INTO files (id, bytes, filename, purpose, blob_key, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, epoch_now() + $6) RETURNING *",
        file_id,
        size,
        filename,
        purpose,
        blob_key,
        expires_seconds,
    )
    assert row is not None
    return render(dict(row))


async def get_row(conn: asyncpg.Connection, file_id: str) -> dict[str, Any]:
    """The file's row (with `blob_key`), or NotFound."""
    row = await conn.fetchrow(f"SELECT * FROM files WHERE id = $1 AND {_LIVE}", file_id)
    if row is None:
        raise NotFound.of("file", file_id)
    return dict(row)


async def get(conn: asyncpg.Connection, file_id: str) -> FileObject:
    """The file, or NotFound."""
    return render(await get_row(conn, file_id))


async def existing(conn: asyncpg.Connection, file_ids: list[str]) -> None:
    """NotFound naming the first of `file_ids` that does not exist (no query for none)."""
    if not file_ids:
        return
    found = {
        r["id"]
        for r in await conn.fetch(
            f"SELECT id FROM files WHERE id = ANY($1::text[]) AND {_LIVE}", file_ids
        )
    }
    for file_id in file_ids:
        if file_id not in found:
            raise NotFound.of("file", file_id)


async def delete(conn: asyncpg.Connection, file_id: str) -> str:
    """Delete the file (and so remove it from every vector store); returns its blob key."""
    key = await conn.fetchval(
        f"DELETE FROM files WHERE id = $1 AND {MINE} RETURNING blob_key", file_id
    )
    if key is None:
        raise NotFound.of("file", file_id)
    return str(key)


async def list_page(
    conn: asyncpg.Connection,
    *,
    purpose: str | None,
    limit: int,
    order: Order,
    after: str | None,
) -> Page[FileObject]:
    """A page of files, optionally of one purpose."""
    where, args = _LIVE, []
    if purpose is not None:
        where, args = f"{_LIVE} AND purpose = $1", [purpose]
    return await page(
        conn,
        table="files",
        where=where,
        args=list(args),
        render=render,
        limit=limit,
        order=order,
        after=after,
        before=None,
    )
