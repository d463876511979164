"""Hybrid search over vector stores: dense vectors (pgvector HNSW) and lexical (Postgres FTS).

Both candidate lists are taken inside the database, filtered there by vector store and
attributes; they are fused into one score in [0, 1] (see `fuse`).
"""

from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.vector_stores import Filter
from services.core.embeddings import Embedder, as_pgvector
from services.core.errors import InvalidRequest
from services.core.search_filters import Params, condition

CANDIDATES = 100
"""How many chunks each list (dense, lexical) contributes before fusion."""
DENSE_WEIGHT = 0.7
"""Share of the dense similarity in the fused score; the lexical score has the rest."""


@dataclass(frozen=True)
class Hit:
    """One chunk that matched, with its fused score."""

    chunk_id: int
    vector_store_id: str
    file_id: str
    filename: str
    text: str
    attributes: dict[str, Any] | None
    score: float


def _hybrid_sql(dims: int, where: str) -> str:
    # $1 query vector, $2 query text, $3 store ids, $4 candidates; then the filter's values.
    # `dims` is an int from the embedder, safe to inline: the cast must match the index.
    vector = f"(embedding::vector({dims}))"
    return f"""
    WITH dense AS (
        SELECT id, 1 - ({vector} <=> $1::vector({dims})) AS similarity
        FROM chunks
        WHERE dims = {dims} AND vector_store_id = ANY($3::text[]) AND {where}
        ORDER BY {vector} <=> $1::vector({dims})
        LIMIT $4
    ), query AS (
        SELECT coalesce(string_agg(quote_literal(lexeme), ' | '), '')::tsquery AS q
        FROM unnest(tsvector_to_array(to_tsvector('english', $2))) AS lexeme
    ), lexical AS (
        SELECT id, ts_rank_cd(tsv, query.q, 1) AS rank
        FROM chunks, query
        WHERE tsv @@ query.q AND vector_store_id = ANY($3::text[]) AND {where}
        ORDER BY rank DESC
        LIMIT $4
    )
    SELECT c.id, c.vector_store_id, c.file_id, f.filename, c.text, c.attributes,
           d.similarity, l.rank
    FROM (SELECT id FROM dense UNION SELECT id FROM lexical) AS found
    JOIN chunks AS c ON c.id = found.id
    JOIN files AS f ON f.id = c.file_id
    LEFT JOIN dense AS d ON d.id = c.id
    LEFT JOIN lexical AS l ON l.id = c.id
    """


def fuse(rows: list[asyncpg.Record]) -> list[tuple[float, asyncpg.Record]]:
    """A convex mix of the dense similarity (min-max scaled over the candidates) and the
    lexical rank (scaled by its maximum); a chunk missing from a list scores 0 there."""
    sims = [r["similarity"] for r in rows if r["similarity"] is not None]
    ranks = [r["rank"] for r in rows if r["rank"] is not None]
    low, high = (min(sims), max(sims)) if sims else (0.0, 0.0)
    top_rank = max(ranks) if ranks else 0.0
    scored = []
    for row in rows:
        dense = 0.0
        if row["similarity"] is not None:
            dense = (row["similarity"] - low) / (high - low) if high > low else 1.0
        lexical = row["rank"] / top_rank if row["rank"] is not None and top_rank > 0 else 0.0
        scored.append((DENSE_WEIGHT * dense + (1 - DENSE_WEIGHT) * lexical, row))
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return scored


async def search(
    conn: asyncpg.Connection,
    embedder: Embedder,
    store_ids: list[str],
    queries: list[str],
    *,
    limit: int,
    filters: Filter | None = None,
    score_threshold: float = 0.0,
) -> list[Hit]:
    """The best `limit` chunks of these stores for the queries (several: best score wins)."""
    params = Params(start=5)
    try:
        where = condition(filters, params) if filters is not None else "TRUE"
    except ValueError as exc:
        raise InvalidRequest(f"Invalid 'filters': {exc}.", param="filters") from None
    best: dict[int, Hit] = {}
    async with conn.transaction():
        # Filtered HNSW scans go on until enough rows pass the filter (pgvector 0.8).
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        await conn.execute(f"SET LOCAL hnsw.ef_search = {max(CANDIDATES, 40)}")
        for text in queries:
            vector = await embedder.query(text)
            rows = await conn.fetch(
                _hybrid_sql(len(vector), where),
                as_pgvector(vector),
                text.replace("\\", " "),
                store_ids,
                CANDIDATES,
                *params.values,
            )
            for score, row in fuse(rows):
                hit = Hit(
                    chunk_id=row["id"],
                    vector_store_id=row["vector_store_id"],
                    file_id=row["file_id"],
                    filename=row["filename"],
                    text=row["text"],
                    attributes=row["attributes"],
                    score=round(min(1.0, max(0.0, score)), 6),
                )
                if hit.chunk_id not in best or best[hit.chunk_id].score < hit.score:
                    best[hit.chunk_id] = hit
    hits = sorted(best.values(), key=lambda h: h.score, reverse=True)
    return [h for h in hits if h.score >= score_threshold][:limit]
