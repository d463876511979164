"""tool-executor subscriber: `threadbus.tool_calls` (the decorator is the topology)."""

import logging
from typing import Annotated

from faststream import Context
from faststream.kafka import KafkaRouter

from schemas import topics
from schemas.events import ExecuteToolCall, ToolCallResult
from services.core import bus, outbox
from services.core.ids import new_id
from services.core.runtime import Runtime

log = logging.getLogger(__name__)

router = KafkaRouter()

RuntimeDep = Annotated[Runtime, Context("runtime")]


@router.subscriber(topics.TOOL_CALLS, **bus.subscriber_options(topics.GROUP_TOOL_EXECUTOR))
async def on_tool_call(order: ExecuteToolCall, runtime: RuntimeDep) -> None:
    """Answer one tool call exactly once, keyed by (tool_call_id).

    No server-side tools are registered in this version, so the answer is an error text the
    model can read; the run is never left waiting.
    """
    result = ToolCallResult(
        id=new_id("cmd"),
        run_id=order.run_id,
        thread_id=order.thread_id,
        tool_call_id=order.tool_call_id,
        output=f"No server-side handler is registered for {order.tool_type} {order.name!r}.",
        is_error=True,
    )
    async with runtime.pool.acquire() as conn, conn.transaction():
        first = await conn.fetchval(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            topics.GROUP_TOOL_EXECUTOR,
            f"{order.run_id}/{order.tool_call_id}",
        )
        if first is None:
            return
        await outbox.enqueue(conn, topics.TOOL_RESULTS, order.thread_id, result)
    log.info("tool call %s of run %s: no handler", order.tool_call_id, order.run_id)
