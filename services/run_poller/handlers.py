"""run-poller subscribers: wake-ups on `threadbus.runs` (the decorators are the topology)."""

import logging

from faststream.kafka import KafkaRouter
from faststream.kafka.message import KafkaMessage

from schemas import topics
from schemas.events import ProcessRun, ToolCallResult
from services.core import bus, toolflow
from services.core.consuming import json_model
from services.core.runtime import RUNTIME, Slot
from services.run_poller.engine import Engine

log = logging.getLogger(__name__)

router = KafkaRouter()

ENGINE: Slot[Engine] = Slot("the engine")


@router.subscriber(topics.RUNS, **bus.subscriber_options(topics.GROUP_RUN_POLLER, background=True))
async def on_process_run(message: KafkaMessage) -> None:
    """Claim the run and drive it in a task; the offset commits right after the claim.

    A wake-up is only a hint: the run row decides. A duplicate or late wake-up finds the run
    claimed or finished and does nothing.
    """

    engine = ENGINE.get()

    async def offer(order: ProcessRun) -> None:
        if await engine.offer(order.run_id):
            log.debug("claimed run %s", order.run_id)

    consumer = RUNTIME.get().consumer(topics.GROUP_RUN_POLLER)
    await consumer.handle(message, json_model(ProcessRun), offer)


@router.subscriber(topics.TOOL_RESULTS, **bus.subscriber_options(topics.GROUP_RUN_POLLER_RESULTS))
async def on_tool_result(message: KafkaMessage) -> None:
    """Store a server-side tool result once; the run wakes when its step is fully answered."""

    runtime = RUNTIME.get()

    async def store(result: ToolCallResult) -> None:
        async with runtime.pool.acquire() as conn, conn.transaction():
            stored = await toolflow.accept_result(
                conn, result.thread_id, result.run_id, result.tool_call_id, result.output,
                result.is_error, result.details,
            )  # fmt: skip
        if not stored:
            log.info("result for %s/%s not stored: answered before, or not a server-side call",
                     result.run_id, result.tool_call_id)  # fmt: skip

    consumer = runtime.consumer(topics.GROUP_RUN_POLLER_RESULTS)
    await consumer.handle(message, json_model(ToolCallResult), store)
