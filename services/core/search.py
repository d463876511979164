"""Hybrid search over vector stores: dense vectors (pgvector HNSW) and BM25 over Postgres FTS.

Both candidate lists are taken inside the database, filtered there by vector store and
attributes; the lexical statement runs while the query is being embedded. They are fused by
reciprocal rank into one score in [0, 1] (see `fuse`).
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.vector_stores import Filter
from services.core.embeddings import Embedder, as_pgvector
from services.core.errors import InvalidRequest
from services.core.search_filters import Params, condition

CANDIDATES = 100
"""How many chunks each list (dense, lexical) contributes before fusion."""
POSTINGS_BUDGET = 1_000
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


def _filter(filters: Filter | None, *, start: int) -> tuple[str, list[object]]:
    """The filter as a condition whose placeholders start at `start`, and their values."""
    if filters is None:
        return "TRUE", []
    params = Params(start=start)
    return condition(filters, params), params.values


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


_FOUND = """
    SELECT c.id, c.vector_store_id, c.file_id, f.filename, c.text, c.attributes, found.score
    FROM found JOIN chunks AS c ON c.id = found.id JOIN files AS f ON f.id = c.file_id
"""


def _dense_sql(dims: int, where: str) -> str:
    """$1 query vector, $2 store ids, $3 candidates; then the filter's values.

    `dims` is an int from the embedder, safe to inline: the cast must match the index's.
    """
    vector = f"(embedding::vector({dims}))"
    return (
        f"""
    WITH found AS (
        SELECT id, 1 - ({vector} <=> $1::vector({dims})) AS score
        FROM chunks
        WHERE dims = {dims} AND vector_store_id = ANY($2::text[]) AND {where}
        ORDER BY {vector} <=> $1::vector({dims})
        LIMIT $3
    )"""
        + _FOUND
    )


def _lexical_sql(where: str) -> str:
    """$1 query text, $2 store ids, $3 candidates, $4 postings budget; then the filter's values.

    BM25 with the store's document frequencies (`lexemes`) and lengths (`chunk_stats`);
    candidates are the chunks holding the query's rarest terms, scored with all of them.
    """
    return (
        f"""
    WITH terms AS (
        SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS lexeme
    ), stats AS (
        SELECT greatest(coalesce(sum(chunks), 0), 1)::float8 AS n,
               greatest(coalesce(sum(lexemes), 0), 1)::float8
                   / greatest(coalesce(sum(chunks), 0), 1) AS avgdl
        FROM chunk_stats WHERE vector_store_id = ANY($2::text[])
    ), weights AS (
        SELECT t.lexeme, coalesce(sum(l.df), 0) AS df,
               ln(1 + (s.n - coalesce(sum(l.df), 0) + 0.5) / (coalesce(sum(l.df), 0) + 0.5))
                   AS idf
        FROM terms AS t CROSS JOIN stats AS s
        LEFT JOIN lexemes AS l ON l.lexeme = t.lexeme AND l.vector_store_id = ANY($2::text[])
        GROUP BY t.lexeme, s.n
    ), chosen AS (
        SELECT lexeme FROM (
            SELECT lexeme, df, sum(df) OVER (ORDER BY df, lexeme) AS running
            FROM weights WHERE df > 0
        ) AS w
        WHERE running - df < $4
    ), query AS (
        SELECT coalesce(string_agg(quote_literal(lexeme), ' | '), '')::tsquery AS q FROM chosen
    ), scored AS (
        SELECT array_agg(lexeme ORDER BY lexeme) AS lexemes, array_agg(idf ORDER BY lexeme) AS idfs
        FROM weights WHERE df > 0
    ), found AS (
        SELECT c.id, bm25.score
        FROM chunks AS c, query, stats AS s, scored,
             LATERAL (
                 SELECT sum(scored.idfs[array_position(scored.lexemes, u.lexeme)] * hit.tf
                            * {BM25_K1 + 1}
                            / (hit.tf + {BM25_K1} * (1 - {BM25_B}
                                                     + {BM25_B} * length(c.tsv) / s.avgdl)))
                            AS score
                 FROM unnest(ts_filter(setweight(setweight(c.tsv, 'D'), 'A', scored.lexemes),
                                       '{{a}}')) AS u,
                      LATERAL (SELECT coalesce(array_length(u.positions, 1), 1)::float8 AS tf)
                          AS hit
             ) AS bm25
        WHERE c.tsv @@ query.q AND c.vector_store_id = ANY($2::text[]) AND {where}
        ORDER BY bm25.score DESC
        LIMIT $3
    )"""
        + _FOUND
    )


def fuse(
    dense: list[asyncpg.Record], lexical: list[asyncpg.Record]
) -> list[tuple[float, asyncpg.Record]]:
    """Reciprocal rank fusion of the dense and BM25 lists (each best first), scaled to [0, 1].

    A chunk's score is the sum of 1 / (k + rank) over the lists it is in, divided by the
    best possible (first in both), so 1.0 means first in both lists and 0.5 first in one.
    """
    fused: dict[int, float] = {}
    rows: dict[int, asyncpg.Record] = {}
    word_match: dict[int, float] = {}
    for ranking in (dense, lexical):
        for position, row in enumerate(ranking, start=1):
            fused[row["id"]] = fused.get(row["id"], 0.0) + 1 / (RRF_K + position)
            rows.setdefault(row["id"], row)
    for row in lexical:
        word_match[row["id"]] = row["score"]
    best = 2 / (RRF_K + 1)
    scored = [(score / best, rows[chunk_id]) for chunk_id, score in fused.items()]
    # Small k gives exact ties (third in one list = third in the other): the word match wins.
    scored.sort(key=lambda pair: (pair[0], word_match.get(pair[1]["id"], 0.0)), reverse=True)
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
    try:
        lexical_where, lexical_params = _filter(filters, start=5)
        dense_where, dense_params = _filter(filters, start=4)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid 'filters': {exc}.", param="filters") from None
    best: dict[int, Hit] = {}
    async with conn.transaction():
        # Filtered HNSW scans go on until enough rows pass the filter (pgvector 0.8).
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        await conn.execute(f"SET LOCAL hnsw.ef_search = {max(CANDIDATES, 40)}")
        for text in queries:
            # The query is embedded (in a thread, or by the endpoint) while Postgres runs the
            # lexical half, which needs no vector.
            embedding = asyncio.ensure_future(embedder.query(text))
            try:
                lexical = await conn.fetch(
                    _lexical_sql(lexical_where), text.replace("\\", " "), store_ids,
                    CANDIDATES, POSTINGS_BUDGET, *lexical_params,
                )  # fmt: skip
                vector = await embedding
            finally:
                embedding.cancel()
            dense = await conn.fetch(
                _dense_sql(len(vector), dense_where), as_pgvector(vector), store_ids,
                CANDIDATES, *dense_params,
            )  # fmt: skip
            for score, row in fuse(dense, lexical):
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
