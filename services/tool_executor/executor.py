"""Running one server-side tool call exactly once in effect, and advertising what we can run."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import asyncpg

from schemas import topics
from schemas.events import ExecuteToolCall, ToolCallResult
from services.core import outbox
from services.core.ids import new_id
from services.tool_executor.file_search import Answer
from services.tool_executor.registry import Handler, HandlerError, ToolCall

log = logging.getLogger(__name__)

CONSUMER = topics.GROUP_TOOL_EXECUTOR

BuiltinTool = Callable[[ExecuteToolCall], Awaitable[Answer]]
"""A built-in tool (file_search, code_interpreter) by its tool type."""


class Executor:
    """Answers tool calls with the registered handlers."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: dict[str, Handler],
        owner: str,
        builtins: Mapping[str, BuiltinTool],
    ):
        self._pool = pool
        self.handlers = handlers
        self._owner = owner
        self._builtins = builtins

    async def execute(self, order: ExecuteToolCall) -> None:
        """Run the call unless its result is already recorded; publish the result once."""
        key = f"{order.run_id}/{order.tool_call_id}"
        async with self._pool.acquire() as conn:
            recorded = await conn.fetchrow(
                "SELECT output IS NOT NULL AS answered, EXISTS (SELECT 1 FROM processed_events"
                " WHERE consumer = $3 AND event_id = $4) AS published"
                " FROM tool_calls WHERE run_id = $1 AND id = $2",
                order.run_id,
                order.tool_call_id,
                CONSUMER,
                key,
            )
        if recorded is None or recorded["answered"]:
            return  # the run is gone, or the result is recorded: never recompute it
        if recorded["published"]:
            return  # the result is on its way to the run-poller
        builtin = self._builtins.get(order.tool_type)
        answer = await (builtin(order) if builtin is not None else self._run(order))
        result = ToolCallResult(
            id=new_id("cmd"),
            run_id=order.run_id,
            thread_id=order.thread_id,
            tool_call_id=order.tool_call_id,
            output=answer.output,
            is_error=answer.is_error,
            details=answer.details,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            first = await conn.fetchval(
                "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING event_id",
                CONSUMER,
                key,
            )
            if first is None:
                return  # another executor finished the same call first
            await outbox.enqueue(conn, topics.TOOL_RESULTS, order.thread_id, result)

    async def _run(self, order: ExecuteToolCall) -> Answer:
        name = order.name or ""
        handler = self.handlers.get(name)
        if handler is None:
            return Answer(
                f"Error: no server-side handler is registered for function {name!r}.", True
            )
        call = ToolCall(order.tool_call_id, order.run_id, order.thread_id, name)
        try:
            output = await asyncio.wait_for(handler(order.arguments, call), handler.timeout)
        except TimeoutError:
            return Answer(
                f"Error: the function {name!r} did not answer within {handler.timeout:g} s.", True
            )
        except HandlerError as exc:
            return Answer(f"Error: the function {name!r} failed: {exc}", True)
        except Exception as exc:
            # The boundary around operator code: whatever it raises, the model reads it and the
            # run goes on; nothing here may crash the consumer.
            log.warning("function %s raised %s: %s", name, type(exc).__name__, exc)
            return Answer(f"Error: the function {name!r} raised {type(exc).__name__}: {exc}", True)
        log.info("function %s answered call %s", name, order.tool_call_id)
        return Answer(output, False)

    async def advertise(self) -> None:
        """Tell the run-poller which functions run here (refreshed on a timer)."""
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO function_handlers (name, kind, owner, heartbeat_at)"
                " VALUES ($1, $2, $3, now()) ON CONFLICT (name) DO UPDATE SET"
                " kind = EXCLUDED.kind, owner = EXCLUDED.owner, heartbeat_at = now()",
                [(name, h.kind, self._owner) for name, h in self.handlers.items()],
            )
