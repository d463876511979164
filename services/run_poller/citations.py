"""What a reply carries from the tools, as the hosted tools produced it: file_citation
annotations for the markers the model writes for file_search results
(`【<call>:<result>†<file>】`), file_path annotations for its `sandbox:/mnt/data/...` links to
files the code wrote, and image_file parts for the images the code displayed."""

import re
from typing import Any

import asyncpg

MARKER = re.compile(r"【(\d+):(\d+)†([^】]*)】")
LINK_PREFIX = "sandbox:/mnt/data/"
"""How a reply links to a file the code wrote."""
SANDBOX_LINK = re.compile(re.escape(LINK_PREFIX) + r"([^\s)\]\"'<>]+)")


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


async def images_since_last_reply(conn: asyncpg.Connection, run_id: str) -> list[str]:
    """File ids of the images the run's code displayed since its previous reply."""
    rows = await conn.fetch(
        "SELECT c.details FROM tool_calls AS c JOIN run_steps AS s ON s.id = c.step_id"
        " WHERE c.run_id = $1 AND c.type = 'code_interpreter' AND s.step_index > coalesce("
        "  (SELECT max(step_index) FROM run_steps WHERE run_id = $1"
        "   AND type = 'message_creation'), -1)"
        " ORDER BY s.step_index, c.position",
        run_id,
    )
    return [
        output["image"]["file_id"]
        for row in rows
        for output in (row["details"] or {}).get("outputs") or []
        if output.get("type") == "image"
    ]


async def written_files(conn: asyncpg.Connection, thread_id: str) -> dict[str, str]:
    """The files the thread's code wrote: path in /mnt/data -> file id."""
    rows = await conn.fetch(
        "SELECT path, file_id FROM sandbox_files WHERE thread_id = $1", thread_id
    )
    return {r["path"]: r["file_id"] for r in rows}


def file_paths(text: str, written: dict[str, str]) -> list[dict[str, Any]]:
    """One file_path annotation per `sandbox:/mnt/data/<path>` link to a file the code wrote."""
    found = []
    for match in SANDBOX_LINK.finditer(text):
        path = match.group(1).rstrip(".,;:!?")
        if path not in written:
            continue
        end = match.start() + len(LINK_PREFIX) + len(path)
        found.append(
            {
                "type": "file_path",
                "text": text[match.start() : end],
                "start_index": match.start(),
                "end_index": end,
                "file_path": {"file_id": written[path]},
            }
        )
    return found
