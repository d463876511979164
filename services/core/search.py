"""Hybrid search over vector stores: dense vectors (pgvector HNSW) and BM25 over Postgres FTS.

Both candidate lists are taken inside the database, in one statement, filtered there by vector
store and attributes; they are fused by reciprocal rank into one score in [0, 1] (see `fuse`).
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
POSTINGS_BUDGET = 2_000
"""Lexical candidates are the chunks holding the query's rarest terms, taken rarest first
while their chunk counts add up to this (at least one term): common terms still score the
candidates, but never make every chunk of a large store a candidate."""
BM25_K1 = 0.9
BM25_B = 0.75
"""BM25 parameters (Anserini's k1 with Lucene's b); on SciFact BM25 alone gives nDCG@10 0.687."""
RRF_K = 5
"""Reciprocal rank fusion constant. Measured at chunk level through bench/scifact.py's queries
(BM25 k1 0.9, b 0.75; ties broken by BM25), nDCG@10 is flat around it: k=1 0.7243, 2 0.7231,
3 0.7214, 4 0.7216, 5 0.7221, 8 0.7214. Convex mixes of normalised scores peaked at single
weights instead (min-max: 0.7234 at 0.5 but 0.7072 at 0.6)."""


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
    """Reciprocal rank fusion of the dense and BM25 lists, scaled to [0, 1].

    A chunk's score is the sum of 1 / (k + rank) over the lists it is in, divided by the
    best possible (first in both), so 1.0 means first in both lists and 0.5 first in one.
    """
    dense = sorted((r for r in rows if r["similarity"] is not None),
                   key=lambda r: r["similarity"], reverse=True)  # fmt: skip
    lexical = sorted((r for r in rows if r["rank"] is not None),
                     key=lambda r: r["rank"], reverse=True)  # fmt: skip
    fused: dict[int, float] = {}
    for ranking in (dense, lexical):
        for position, row in enumerate(ranking, start=1):
            fused[row["id"]] = fused.get(row["id"], 0.0) + 1 / (RRF_K + position)
    best = 2 / (RRF_K + 1)
    by_id = {row["id"]: row for row in rows}
    scored = [(score / best, by_id[chunk_id]) for chunk_id, score in fused.items()]
    # Small k gives exact ties (third in one list = third in the other): the word match wins.
    scored.sort(key=lambda pair: (pair[0], pair[1]["rank"] or 0.0), reverse=True)
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
