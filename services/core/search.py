"""Hybrid search over vector stores: dense vectors (pgvector HNSW) and BM25 over Postgres FTS.

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
POSTINGS_BUDGET = 20_000
"""Lexical candidates are the chunks holding the query's rarest terms, taken rarest first
while their chunk counts add up to this (at least one term): common terms still score the
candidates, but never make every chunk of a large store a candidate."""
BM25_K1 = 0.9
BM25_B = 0.4
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
    # $1 query vector, $2 query text, $3 store ids, $4 candidates per list, $5 postings budget;
    # then the filter's values. `dims` is an int from the embedder, safe to inline: the cast
    # must match the index's expression.
    vector = f"(embedding::vector({dims}))"
    return f"""
    WITH dense AS (
        SELECT id, 1 - ({vector} <=> $1::vector({dims})) AS similarity
        FROM chunks
        WHERE dims = {dims} AND vector_store_id = ANY($3::text[]) AND {where}
        ORDER BY {vector} <=> $1::vector({dims})
        LIMIT $4
    ), terms AS (
        SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('english', $2))) AS lexeme
    ), stats AS (
        SELECT greatest(coalesce(sum(chunks), 0), 1)::float8 AS n,
               greatest(coalesce(sum(lexemes), 0), 1)::float8
                   / greatest(coalesce(sum(chunks), 0), 1) AS avgdl
        FROM chunk_stats WHERE vector_store_id = ANY($3::text[])
    ), weights AS (
        SELECT t.lexeme, coalesce(sum(l.df), 0) AS df,
               ln(1 + (s.n - coalesce(sum(l.df), 0) + 0.5) / (coalesce(sum(l.df), 0) + 0.5))
                   AS idf
        FROM terms AS t CROSS JOIN stats AS s
        LEFT JOIN lexemes AS l ON l.lexeme = t.lexeme AND l.vector_store_id = ANY($3::text[])
        GROUP BY t.lexeme, s.n
    ), chosen AS (
        SELECT lexeme FROM (
            SELECT lexeme, df, sum(df) OVER (ORDER BY df, lexeme) AS running
            FROM weights WHERE df > 0
        ) AS w
        WHERE running - df < $5
    ), query AS (
        SELECT coalesce(string_agg(quote_literal(lexeme), ' | '), '')::tsquery AS q FROM chosen
    ), scored AS (
        SELECT array_agg(lexeme) AS lexemes FROM weights WHERE df > 0
    ), lexical AS (
        SELECT c.id,
               sum(w.idf * hit.tf * {BM25_K1 + 1}
                   / (hit.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * length(c.tsv) / s.avgdl)))
                   AS rank
        FROM chunks AS c, query, stats AS s, scored,
             LATERAL (
                 SELECT u.lexeme, coalesce(array_length(u.positions, 1), 1)::float8 AS tf
                 FROM unnest(ts_filter(setweight(setweight(c.tsv, 'D'), 'A', scored.lexemes),
                                       '{{a}}')) AS u
             ) AS hit,
             weights AS w
        WHERE w.lexeme = hit.lexeme AND c.tsv @@ query.q
              AND c.vector_store_id = ANY($3::text[]) AND {where}
        GROUP BY c.id
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
    BM25 score (scaled by its maximum); a chunk missing from a list scores 0 there."""
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
    params = Params(start=6)
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
                POSTINGS_BUDGET,
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
