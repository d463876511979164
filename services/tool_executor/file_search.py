"""The file_search tool: a hybrid search over the vector stores of the run's assistant and thread.

The model reads the results as text, each behind a marker it cites (`【<call>:<result>†<file>】`);
the step records them (with their text, shown on request) for the run-poller's citations.
"""

import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.events import ExecuteToolCall
from services.core import search, tokens
from services.core.embeddings import Embedder
from services.core.errors import ThreadbusError
from services.core.store import vector_stores

log = logging.getLogger(__name__)

_ORDINAL = """
    SELECT count(*) FROM tool_calls AS c JOIN run_steps AS s ON s.id = c.step_id
    WHERE c.run_id = $1 AND c.type = 'file_search' AND (s.step_index, c.position) <
        (SELECT s2.step_index, c2.position FROM tool_calls AS c2
         JOIN run_steps AS s2 ON s2.id = c2.step_id WHERE c2.run_id = $1 AND c2.id = $2)
"""
"""How many file_search calls of the run came before this one: the first number of markers."""

DEFAULT_RANKING = {"ranker": "default_2024_08_21", "score_threshold": 0.0}


@dataclass(frozen=True)
class Answer:
    """What the model reads, whether it is an error, and what the step records."""

    output: str
    is_error: bool
    details: dict[str, Any] | None = None


def _queries(arguments: str) -> list[str]:
    parsed = json.loads(arguments or "{}")
    if not isinstance(parsed, dict):
        raise ValueError("the arguments are not a JSON object")
    queries = parsed.get("queries", parsed.get("query"))
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) for q in queries):
        raise ValueError("'queries' must be a non-empty list of strings")
    return [q for q in queries if q.strip()][:5] or queries[:1]


class FileSearch:
    """Answers file_search calls."""

    def __init__(self, pool: asyncpg.Pool, embedder: Embedder):
        self._pool = pool
        self._embedder = embedder

    async def __call__(self, order: ExecuteToolCall) -> Answer:
        """Search and format; a bad call or an unusable store is an error the model reads."""
        try:
            queries = _queries(order.arguments)
        except ValueError as exc:
            return Answer(f'Error: file_search needs {{"queries": [...]}}: {exc}.', True)
        async with self._pool.acquire() as conn:
            run = await conn.fetchrow(
                "SELECT assistant_id, model, tools FROM runs WHERE id = $1", order.run_id
            )
            if run is None:
                return Answer("Error: the run is gone.", True)
            options = next((t.get("file_search") or {} for t in run["tools"]
                            if t.get("type") == "file_search"), {})  # fmt: skip
            ranking = {**DEFAULT_RANKING, **(options.get("ranking_options") or {})}
            default_limit = 5 if str(run["model"]).startswith("gpt-3.5") else 20
            limit = int(options.get("max_num_results") or default_limit)
            budget = 4_000 if str(run["model"]).startswith("gpt-3.5") else 16_000
            assistant_ids, thread_ids = await vector_stores.of_run(
                conn, order.thread_id, run["assistant_id"]
            )
            store_ids = list(dict.fromkeys(assistant_ids + thread_ids))
            if not store_ids:
                details = {"ranking_options": ranking, "results": []}
                return Answer("No files are available to search.", False, details)
            try:
                await vector_stores.usable(conn, store_ids)
                hits = await search.search(
                    conn, self._embedder, store_ids, queries,
                    limit=limit, score_threshold=float(ranking["score_threshold"]),
                )  # fmt: skip
            except ThreadbusError as exc:
                return Answer(f"Error: {exc.message}", True)
            await vector_stores.touch(conn, store_ids)
            ordinal = await conn.fetchval(_ORDINAL, order.run_id, order.tool_call_id)
        results: list[dict[str, Any]] = []
        lines: list[str] = []
        used = 0
        for hit in hits:
            cost = tokens.count(hit.text)
            if results and used + cost > budget:
                break  # the hosted tool's token budget: fewer results rather than a cut one
            used += cost
            marker = f"【{ordinal}:{len(results)}†{hit.filename}】"
            lines.append(f"{marker}\n{hit.text}")
            results.append({
                "file_id": hit.file_id, "file_name": hit.filename, "score": hit.score,
                "content": [{"type": "text", "text": hit.text}],
            })  # fmt: skip
        details = {"ranking_options": ranking, "results": results}
        if not results:
            return Answer(f"No results for {queries!r}.", False, details)
        log.info("file_search for call %s: %d results", order.tool_call_id, len(results))
        header = "Results of file_search; cite what you use with its marker.\n\n"
        return Answer(header + "\n\n".join(lines), False, details)
