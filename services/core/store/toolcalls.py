"""SQL for tool calls: what the model asked for, who answers, and each output (written once)."""

import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from schemas.runs import ToolType

FILE_SEARCH = "file_search"
"""The function through which the model calls the file_search tool (answered server-side)."""
CODE_INTERPRETER = "code_interpreter"
"""The function through which the model calls the code_interpreter tool (run in a sandbox)."""
BUILTIN_TYPES: dict[str, ToolType] = {
    FILE_SEARCH: "file_search",
    CODE_INTERPRETER: "code_interpreter",
}
"""Function names that stand for built-in tools, and the tool type each stands for."""

HANDLER_FRESH_SECONDS = 60.0
"""A tool-executor that has not refreshed its handlers for this long is taken to be gone."""

Handler = Literal["client", "server"]


def code_of(arguments: str) -> str:
    """The Python a code_interpreter call runs: `{"code": ...}`, or the arguments as written
    (some models send the code itself rather than JSON)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
        return str(parsed["code"])
    return parsed if isinstance(parsed, str) else arguments


@dataclass(frozen=True)
class ToolCallRow:
    """One tool call of a run."""

    run_id: str
    id: str
    step_id: str
    thread_id: str
    position: int
    type: ToolType
    name: str
    arguments: str
    handler: Handler
    output: str | None
    is_error: bool
    details: dict[str, Any] | None

    def as_step_entry(self) -> dict[str, Any]:
        """The call as it appears in a tool_calls step's details (shaped by its tool type)."""
        if self.type == "file_search":
            return {"id": self.id, "type": "file_search", "file_search": self.details or {}}
        if self.type == "code_interpreter":
            outputs = (self.details or {}).get("outputs") or []
            return {
                "id": self.id,
                "type": "code_interpreter",
                "code_interpreter": {"input": code_of(self.arguments), "outputs": outputs},
            }
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments, "output": self.output},
        }

    def as_required_action(self) -> dict[str, Any]:
        """The call as it appears in `required_action.submit_tool_outputs.tool_calls`."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def _row(record: asyncpg.Record) -> ToolCallRow:
    return ToolCallRow(**{k: record[k] for k in ToolCallRow.__dataclass_fields__})


async def server_side(conn: asyncpg.Connection, names: list[str]) -> set[str]:
    """Which of these function names a live tool-executor has a handler for."""
    rows = await conn.fetch(
        "SELECT name FROM function_handlers WHERE name = ANY($1::text[])"
        " AND heartbeat_at > now() - make_interval(secs => $2)",
        names,
        HANDLER_FRESH_SECONDS,
    )
    return {r["name"] for r in rows}


async def record(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    thread_id: str,
    step_id: str,
    calls: list[dict[str, Any]],
    server: set[str],
) -> list[ToolCallRow]:
    """Insert the calls of one model turn (`calls`: id, name, arguments), in order."""
    rows = []
    for position, call in enumerate(calls):
        builtin = BUILTIN_TYPES.get(call["name"])
        row = await conn.fetchrow(
            "INSERT INTO tool_calls (run_id, id, step_id, thread_id, position, name, arguments,"
            " handler, type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
            run_id,
            call["id"],
            step_id,
            thread_id,
            position,
            call["name"],
            call["arguments"],
            "server" if builtin or call["name"] in server else "client",
            builtin or "function",
        )
        rows.append(_row(row))
    return rows


async def of_step(conn: asyncpg.Connection, step_id: str) -> list[ToolCallRow]:
    """The calls of one step, in the order the model made them."""
    rows = await conn.fetch(
        "SELECT * FROM tool_calls WHERE step_id = $1 ORDER BY position", step_id
    )
    return [_row(r) for r in rows]


async def of_thread(
    conn: asyncpg.Connection, thread_id: str
) -> list[tuple[int, list[ToolCallRow]]]:
    """The thread's completed tool steps, in the order they happened, as (the step's `seq`, its
    calls in the order the model made them); one statement for all of them."""
    rows = await conn.fetch(
        "SELECT s.seq AS step_seq, c.* FROM run_steps s JOIN tool_calls c ON c.step_id = s.id"
        " WHERE s.thread_id = $1 AND s.type = 'tool_calls' AND s.status = 'completed'"
        " ORDER BY s.seq, c.position",
        thread_id,
    )
    turns: dict[int, list[ToolCallRow]] = {}
    for row in rows:
        turns.setdefault(row["step_seq"], []).append(_row(row))
    return list(turns.items())


async def of_run(conn: asyncpg.Connection, run_id: str) -> list[ToolCallRow]:
    """Every call of a run."""
    rows = await conn.fetch(
        "SELECT * FROM tool_calls WHERE run_id = $1 ORDER BY step_id, position", run_id
    )
    return [_row(r) for r in rows]


async def store_output(
    conn: asyncpg.Connection,
    run_id: str,
    call_id: str,
    output: str,
    *,
    handler: Literal["client", "server"],
    is_error: bool = False,
    details: dict[str, Any] | None = None,
) -> ToolCallRow | None:
    """Write the output (and structured result) of a call answered by `handler` once; None
    when it had one already, or is answered by the other side (a client cannot answer a
    server-side call, nor a `threadbus.tool_results` record a client-side one)."""
    row = await conn.fetchrow(
        "UPDATE tool_calls SET output = $3, is_error = $4, completed_at = now(),"
        " details = coalesce($5, details) WHERE run_id = $1 AND id = $2 AND output IS NULL"
        " AND handler = $6 RETURNING *",
        run_id,
        call_id,
        output,
        is_error,
        details,
        handler,
    )
    return _row(row) if row is not None else None


def step_details(calls: list[ToolCallRow]) -> dict[str, Any]:
    """A tool_calls step's details for these calls."""
    return {"type": "tool_calls", "tool_calls": [c.as_step_entry() for c in calls]}


def step_delta(step_id: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A `thread.run.step.delta` of a tool_calls step."""
    return {
        "id": step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": tool_calls}},
    }
