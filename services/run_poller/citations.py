"""Citations: the markers the model writes for file_search results become file_citation
annotations on the reply, as the hosted tool produced them (`【<call>:<result>†<file>】`)."""

import re
from typing import Any

import asyncpg

MARKER = re.compile(r"【(\d+):(\d+)†([^】]*)】")


async def results_of(conn: asyncpg.Connection, run_id: str) -> list[list[dict[str, Any]]]:
    """The results of the run's file_search calls, in the order the model made the calls."""
    rows = await conn.fetch(
        "SELECT c.details FROM tool_calls AS c JOIN run_steps AS s ON s.id = c.step_id"
        " WHERE c.run_id = $1 AND c.type = 'file_search' ORDER BY s.step_index, c.position",
        run_id,
    )
    return [list((r["details"] or {}).get("results") or []) for r in rows]


def annotations(text: str, results: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One file_citation per marker in `text` that names a result the run found.

    Indices are code points of `text`, so `text[start_index:end_index]` is the marker.
    """
    found = []
    for match in MARKER.finditer(text):
        call, index = int(match.group(1)), int(match.group(2))
        if call >= len(results) or index >= len(results[call]):
            continue
        found.append(
            {
                "type": "file_citation",
                "text": match.group(0),
                "start_index": match.start(),
                "end_index": match.end(),
                "file_citation": {"file_id": results[call][index]["file_id"]},
            }
        )
    return found
