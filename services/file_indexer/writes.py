"""SQL of the file-indexer: claims, chunk writes and final statuses, each fenced by the lease."""

import logging
import uuid
from dataclasses import dataclass

import asyncpg

from schemas.vector_stores import StaticChunking, VectorStoreFile
from services.core.embeddings import as_pgvector
from services.core.store.vector_store_files import render

log = logging.getLogger(__name__)

_indexed_dims: set[int] = set()


class LeaseLost(Exception):
    """The file is no longer ours: cancelled, deleted, attached again, or taken over."""


@dataclass(frozen=True)
class Claim:
    """A file this indexer holds the lease of."""

    vector_store_id: str
    file_id: str
    token: uuid.UUID
    chunking: StaticChunking
    attempts: int


@dataclass(frozen=True)
class Source:
    """Where a file's bytes are and what it is called."""

    blob_key: str
    filename: str


_HELD = "vector_store_id = $1 AND file_id = $2 AND lease_token = $3 AND status = 'in_progress'"


async def claim(
    conn: asyncpg.Connection, room: int, owner: str, lease_seconds: float
) -> list[Claim]:
    """Take up to `room` files waiting for an indexer (none holds a live lease on them)."""
    rows = await conn.fetch(
        "UPDATE vector_store_files AS f SET lease_token = gen_random_uuid(),"
        " lease_expires_at = now() + make_interval(secs => $2), attempts = f.attempts + 1,"
        " updated_at = now()"
        " FROM (SELECT vector_store_id, file_id FROM vector_store_files"
        "       WHERE status = 'in_progress'"
        "       AND (lease_expires_at IS NULL OR lease_expires_at < now())"
        "       ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED) AS waiting"
        " WHERE f.vector_store_id = waiting.vector_store_id AND f.file_id = waiting.file_id"
        " RETURNING f.vector_store_id, f.file_id, f.lease_token, f.chunking_strategy, f.attempts",
        room,
        float(lease_seconds),
    )
    claims = [
        Claim(
            vector_store_id=r["vector_store_id"],
            file_id=r["file_id"],
            token=r["lease_token"],
            chunking=StaticChunking.model_validate(r["chunking_strategy"]["static"]),
            attempts=r["attempts"],
        )
        for r in rows
    ]
    for c in claims:
        log.info(
            "claimed %s in %s (attempt %d, %s)", c.file_id, c.vector_store_id, c.attempts, owner
        )
    return claims


async def source(conn: asyncpg.Connection, claim: Claim) -> Source:
    """The file behind the claim."""
    row = await conn.fetchrow(
        "SELECT f.blob_key, f.filename FROM files AS f JOIN vector_store_files AS v"
        " ON v.file_id = f.id WHERE v.vector_store_id = $1 AND v.file_id = $2"
        " AND v.lease_token = $3 AND v.status = 'in_progress'",
        claim.vector_store_id,
        claim.file_id,
        claim.token,
    )
    if row is None:
        raise LeaseLost(claim.file_id)
    return Source(blob_key=row["blob_key"], filename=row["filename"])


async def renew(conn: asyncpg.Connection, claim: Claim, lease_seconds: float) -> bool:
    """Extend the lease; False when it is no longer ours."""
    held = await conn.fetchval(
        "UPDATE vector_store_files SET lease_expires_at = now() + make_interval(secs => $4)"
        f" WHERE {_HELD} RETURNING true",
        claim.vector_store_id,
        claim.file_id,
        claim.token,
        float(lease_seconds),
    )
    return bool(held)


async def stored_count(conn: asyncpg.Connection, claim: Claim) -> int:
    """How many chunks an earlier attempt already stored (they are kept, not redone)."""
    value = await conn.fetchval(
        "SELECT count(*) FROM chunks WHERE vector_store_id = $1 AND file_id = $2",
        claim.vector_store_id,
        claim.file_id,
    )
    return int(value)


async def _ensure_index(conn: asyncpg.Connection, dims: int) -> None:
    """An HNSW index for vectors of this many dimensions (made once per dimension)."""
    if dims in _indexed_dims:
        return
    await conn.execute(
        f"CREATE INDEX IF NOT EXISTS chunks_embedding_{dims} ON chunks"
        f" USING hnsw ((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}"
    )
    _indexed_dims.add(dims)


async def store_chunks(
    conn: asyncpg.Connection,
    claim: Claim,
    start: int,
    texts: list[str],
    vectors: list[list[float]],
    lease_seconds: float,
) -> None:
    """Write chunks `start...` and renew the lease, if the lease is still ours."""
    held = await conn.fetchrow(
        f"UPDATE vector_store_files SET lease_expires_at = now() + make_interval(secs => $4)"
        f" WHERE {_HELD} RETURNING attributes",
        claim.vector_store_id,
        claim.file_id,
        claim.token,
        float(lease_seconds),
    )
    if held is None:
        raise LeaseLost(claim.file_id)
    dims = len(vectors[0])
    await _ensure_index(conn, dims)
    # One statement for the batch, so the BM25 statistics trigger runs once per batch.
    await conn.execute(
        "INSERT INTO chunks (vector_store_id, file_id, chunk_index, text, embedding, dims,"
        " attributes) SELECT $1, $2, n, t, e::vector, $6, $7"
        " FROM unnest($3::int[], $4::text[], $5::text[]) AS batch(n, t, e)"
        " ON CONFLICT (vector_store_id, file_id, chunk_index) DO NOTHING",
        claim.vector_store_id,
        claim.file_id,
        list(range(start, start + len(texts))),
        texts,
        [as_pgvector(v) for v in vectors],
        dims,
        held["attributes"],
    )


async def complete(conn: asyncpg.Connection, claim: Claim, text: str) -> VectorStoreFile:
    """The file is indexed: `completed`, with its usage (chunk text and vectors) and content."""
    row = await conn.fetchrow(
        "UPDATE vector_store_files SET status = 'completed', content = $4,"
        " lease_token = NULL, lease_expires_at = NULL, updated_at = now(),"
        " usage_bytes = (SELECT coalesce(sum(octet_length(text) + 4 * dims), 0) FROM chunks"
        "   WHERE vector_store_id = $1 AND file_id = $2)"
        f" WHERE {_HELD} RETURNING *",
        claim.vector_store_id,
        claim.file_id,
        claim.token,
        text,
    )
    if row is None:
        raise LeaseLost(claim.file_id)
    return render(dict(row))


async def fail(conn: asyncpg.Connection, claim: Claim, code: str, message: str) -> VectorStoreFile:
    """The file cannot be indexed: `failed` with the reason; its partial chunks go."""
    row = await conn.fetchrow(
        "UPDATE vector_store_files SET status = 'failed', last_error = $4,"
        " lease_token = NULL, lease_expires_at = NULL, updated_at = now(), usage_bytes = 0"
        f" WHERE {_HELD} RETURNING *",
        claim.vector_store_id,
        claim.file_id,
        claim.token,
        {"code": code, "message": message},
    )
    if row is None:
        raise LeaseLost(claim.file_id)
    await conn.execute(
        "DELETE FROM chunks WHERE vector_store_id = $1 AND file_id = $2",
        claim.vector_store_id,
        claim.file_id,
    )
    return render(dict(row))


async def release(conn: asyncpg.Connection, claim: Claim, delay: float) -> None:
    """Hand the file back: any indexer may claim it after `delay` seconds."""
    await conn.execute(
        "UPDATE vector_store_files SET lease_token = NULL,"
        " lease_expires_at = now() + make_interval(secs => $4)"
        f" WHERE {_HELD}",
        claim.vector_store_id,
        claim.file_id,
        claim.token,
        float(delay),
    )
