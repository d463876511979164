"""Starting each server-side tool call once, recording its result once, and advertising what
we can run."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import asyncpg

from schemas import topics
from schemas.events import ExecuteToolCall, ToolCallResult
from services.core import metrics, outbox, tracing
from services.core.ids import new_id
from services.core.runtime import LIVE_SECONDS
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
        self._running: set[str] = set()
        self._answers: dict[str, Answer] = {}

    async def execute(self, order: ExecuteToolCall) -> None:
        """Run the call unless it was started before; record and publish the result once.

        A call is claimed in Postgres before its handler starts, so a redelivered or re-sent
        order, here or on another executor, does not start it again while the executor that
        started it lives. Only when that executor stopped heartbeating is the call started anew.
        """
        key = f"{order.run_id}/{order.tool_call_id}"
        async with self._pool.acquire() as conn:
            recorded = await conn.fetchrow(
                "SELECT c.output IS NOT NULL AS answered, c.handler, c.type, c.name, c.arguments,"
                " c.thread_id, r.status = 'in_progress' AS waiting, EXISTS (SELECT 1"
                " FROM processed_events WHERE consumer = $3 AND event_id = $4) AS published"
                " FROM tool_calls AS c JOIN runs AS r ON r.id = c.run_id"
                " WHERE c.run_id = $1 AND c.id = $2",
                order.run_id,
                order.tool_call_id,
                CONSUMER,
                key,
            )
        if recorded is None:
            return  # the run is gone
        if recorded["answered"]:  # never recompute a recorded result
            log.info("call %s is answered; not running it again", key)
            return
        if recorded["handler"] != "server" or not recorded["waiting"]:
            log.warning("call %s is not a server-side call its run waits for; not running it", key)
            return
        if recorded["published"]:
            log.info("call %s has its result on the way; not running it again", key)
            return
        # What runs is what the model asked for, as the run-poller stored it: a record names
        # the call, and nothing it says about the function or its arguments is trusted.
        order = order.model_copy(update={
            "thread_id": recorded["thread_id"], "tool_type": recorded["type"],
            "name": recorded["name"], "arguments": recorded["arguments"],
        })  # fmt: skip
        answer = self._answers.get(key)  # answered before, but the result was not recorded
        if answer is None:
            if key in self._running or not await self._claim(order):
                log.info("call %s runs elsewhere; not starting it again", key)
                return
            self._running.add(key)
            function = self._function_label(order)
            began = time.perf_counter()
            try:
                builtin = self._builtins.get(order.tool_type)
                with tracing.span(f"tool {order.tool_type} {function}", attributes={
                    "threadbus.run_id": order.run_id, "threadbus.tool_call_id": order.tool_call_id,
                }):  # fmt: skip
                    answer = await (builtin(order) if builtin is not None else self._run(order))
            finally:
                self._running.discard(key)
                metrics.TOOL_CALL.labels(order.tool_type, function).observe(
                    time.perf_counter() - began
                )
            if answer.is_error:
                metrics.TOOL_FAILURES.labels(order.tool_type, function).inc()
            self._answers[key] = answer
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
            if first is not None:
                await outbox.enqueue(conn, topics.TOOL_RESULTS, order.thread_id, result)
        self._answers.pop(key, None)

    def _function_label(self, order: ExecuteToolCall) -> str:
        """The function a call names, for metrics: a registered one, or `unregistered` (names
        come from the model, so they are not a bounded set); a built-in tool's type."""
        if order.tool_type != "function":
            return order.tool_type
        return order.name if order.name in self.handlers else "unregistered"

    async def _claim(self, order: ExecuteToolCall) -> bool:
        """Mark the call started by this executor, unless a live one started it already."""
        async with self._pool.acquire() as conn:
            claimed = await conn.fetchval(
                "UPDATE tool_calls t SET started_by = $3, started_at = now()"
                " WHERE t.run_id = $1 AND t.id = $2 AND t.output IS NULL AND t.handler = 'server'"
                " AND (t.started_by IS NULL OR t.started_by = $3 OR NOT EXISTS ("
                "   SELECT 1 FROM workers w WHERE w.owner = t.started_by"
                "   AND w.heartbeat_at > now() - make_interval(secs => $4)))"
                " RETURNING t.started_at",
                order.run_id, order.tool_call_id, self._owner, LIVE_SECONDS,
            )  # fmt: skip
        return claimed is not None

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
