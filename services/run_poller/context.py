"""What the model sees: a run's instructions, tools and its thread's timeline as a chat request."""

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.runs import Run
from schemas.threads import Message
from services.core import tokens
from services.core.store import messages, toolcalls
from services.core.store.toolcalls import ToolCallRow


@dataclass(frozen=True)
class ToolTurn:
    """A finished tool_calls step: the model's calls and their outputs."""

    calls: list[ToolCallRow]


TimelineItem = Message | ToolTurn


async def timeline(
    conn: asyncpg.Connection,
    thread_id: str,
    tool_turns: bool = True,
    rows: list[dict[str, Any]] | None = None,
) -> list[TimelineItem]:
    """The thread's messages and completed tool steps, in the order they happened; without
    `tool_turns` (the claim found none), the messages alone, one statement fewer; with the
    message `rows` the claim read, none for them."""
    items: list[tuple[int, TimelineItem]] = []
    if tool_turns:
        turns = await toolcalls.of_thread(conn, thread_id)
        items += [(seq, ToolTurn(calls)) for seq, calls in turns]
    if rows is None:
        rows = [dict(r) for r in await conn.fetch(
            "SELECT * FROM messages WHERE thread_id = $1", thread_id
        )]  # fmt: skip
    items += [(r["seq"], messages.render(r)) for r in rows]
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


INLINE_PROMPT_CHARS = 4_000
"""A prompt this short is counted on the event loop (under 2 ms); a longer one in a thread,
which costs more than counting a short one."""


async def prepare(run: Run, items: list[TimelineItem], *, budget: int | None) -> dict[str, Any]:
    """`chat_request`, on the event loop for a short timeline, else in a worker thread."""
    if text_size(items) < INLINE_PROMPT_CHARS:
        return chat_request(run, items, budget=budget)
    return await asyncio.to_thread(chat_request, run, items, budget=budget)


def text_size(items: list[TimelineItem]) -> int:
    """Characters of text in a timeline: where its tokens are cheaper to count."""
    total = 0
    for item in items:
        if isinstance(item, Message):
            total += sum(len(part.text.value) for part in item.content if part.type == "text")
        else:
            total += sum(len(c.arguments) + len(c.output or "") for c in item.calls)
    return total


def _content(message: Message) -> str | list[dict[str, Any]]:
    texts = [p.text.value for p in message.content if p.type == "text"]
    images = [p.image_url for p in message.content if p.type == "image_url"]
    if not images:
        return "\n".join(texts)
    parts: list[dict[str, Any]] = [{"type": "text", "text": t} for t in texts]
    parts += [
        {"type": "image_url", "image_url": {"url": i.url, "detail": i.detail or "auto"}}
        for i in images
    ]
    return parts


def _chat_messages(item: TimelineItem) -> list[dict[str, Any]]:
    if isinstance(item, Message):
        return [{"role": item.role, "content": _content(item)}]
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in item.calls
    ]
    answers = [
        {"role": "tool", "tool_call_id": c.id, "content": c.output or ""} for c in item.calls
    ]
    return [{"role": "assistant", "content": None, "tool_calls": calls}, *answers]


FILE_SEARCH_FUNCTION: dict[str, Any] = {
    "name": toolcalls.FILE_SEARCH,
    "description": (
        "Search the files available to you (uploaded by the user or given to you) for passages"
        " relevant to the conversation. Use it before answering questions about their content."
        " Each result starts with a marker such as 【0:1†report.pdf】; cite the passages you use"
        " by writing their markers right after the sentences they support."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "queries": {
                "type": "array",
                "items": {"type": "string"},
                "description": "One or more search queries, each self-contained.",
            }
        },
        "required": ["queries"],
    },
}
"""How the model is offered the file_search tool: a function answered server-side."""


CODE_INTERPRETER_FUNCTION: dict[str, Any] = {
    "name": toolcalls.CODE_INTERPRETER,
    "description": (
        "Run Python code in a stateful Jupyter kernel (variables persist between calls on this"
        " conversation). The working directory is /mnt/data: files the user gave you are"
        " there, and files you save there are returned to the user; link them in your answer"
        " as sandbox:/mnt/data/<name>. Displayed matplotlib figures are shown to the user."
        " numpy, pandas and matplotlib are installed; there is no internet access. Output is"
        " what the code prints, the value of its last expression, and any traceback."
    ),
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python code to run."}},
        "required": ["code"],
    },
}
"""How the model is offered the code_interpreter tool: a function run in a sandbox."""


def _tools(run: Run) -> list[dict[str, Any]]:
    tools = []
    for tool in run.tools:
        if tool.type == "function":
            function = tool.function.model_dump(mode="json", exclude_none=True)
            tools.append({"type": "function", "function": function})
        elif tool.type == "file_search":
            tools.append({"type": "function", "function": FILE_SEARCH_FUNCTION})
        elif tool.type == "code_interpreter":
            tools.append({"type": "function", "function": CODE_INTERPRETER_FUNCTION})
    return tools


def _tool_choice(run: Run) -> Any:
    choice = run.tool_choice
    if choice is None or isinstance(choice, str):
        return choice
    if choice.type == "function" and choice.function is not None:
        return {"type": "function", "function": {"name": choice.function.name}}
    builtin = {"file_search": toolcalls.FILE_SEARCH, "code_interpreter": toolcalls.CODE_INTERPRETER}
    if choice.type in builtin:
        return {"type": "function", "function": {"name": builtin[choice.type]}}
    return "required"


class NoRoom(Exception):
    """Not even the newest message fits the prompt budget."""


def _truncate(
    groups: list[list[dict[str, Any]]], budget: int | None, fixed: int
) -> list[dict[str, Any]]:
    """Keep the newest groups that fit `budget` tokens (the middle of the thread goes first)."""
    if budget is None:
        return [m for group in groups for m in group]
    kept: list[list[dict[str, Any]]] = []
    used = fixed
    for group in reversed(groups):
        cost = sum(tokens.of_message(m) for m in group)
        if used + cost > budget:
            break
        kept.append(group)
        used += cost
    if groups and not kept:
        raise NoRoom(f"the newest message alone needs more than {budget} prompt tokens")
    return [m for group in reversed(kept) for m in group]


def chat_request(
    run: Run, items: list[TimelineItem], *, budget: int | None = None
) -> dict[str, Any]:
    """The Chat Completions request for the run's next turn.

    `truncation_strategy` decides what the model sees: `last_messages` keeps the newest N
    messages (with the tool calls between them), and every strategy drops the oldest items
    that do not fit `budget` prompt tokens. Raises NoRoom when nothing fits.
    """
    visible = [i for i in items if not isinstance(i, Message) or i.content]
    strategy = run.truncation_strategy
    if strategy is not None and strategy.type == "last_messages" and strategy.last_messages:
        keep, seen = [], 0
        for item in reversed(visible):
            seen += isinstance(item, Message)
            if seen > strategy.last_messages:
                break
            keep.append(item)
        visible = list(reversed(keep))
    system = [{"role": "system", "content": run.instructions}] if run.instructions else []
    tools = _tools(run)
    fixed = sum(tokens.of_message(m) for m in system) + (tokens.count(str(tools)) if tools else 0)
    chat = system + _truncate([_chat_messages(i) for i in visible], budget, fixed)
    request: dict[str, Any] = {"model": run.model, "messages": chat}
    if run.temperature is not None:
        request["temperature"] = run.temperature
    if run.top_p is not None:
        request["top_p"] = run.top_p
    if run.response_format is not None and run.response_format != "auto":
        request["response_format"] = run.response_format.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    if tools:
        request["tools"] = tools
        if (choice := _tool_choice(run)) is not None:
            request["tool_choice"] = choice
        if not run.parallel_tool_calls:
            request["parallel_tool_calls"] = False
    return request
