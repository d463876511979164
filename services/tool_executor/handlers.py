"""tool-executor subscriber: `threadbus.tool_calls` (the decorator is the topology)."""

from faststream.kafka import KafkaRouter
from faststream.kafka.message import KafkaMessage

from schemas import topics
from schemas.events import ExecuteToolCall
from services.core import bus
from services.core.consuming import json_model
from services.core.runtime import RUNTIME, Slot
from services.tool_executor.executor import Executor

EXECUTOR: Slot[Executor] = Slot("the executor")


def build_router(workers: int) -> KafkaRouter:
    """The subscriber; `workers` consumers in this process share the partitions.

    A thread's calls stay on one partition, so they run in order; calls of different threads
    run in parallel across partitions and processes.
    """
    router = KafkaRouter()
    options = bus.subscriber_options(topics.GROUP_TOOL_EXECUTOR)
    if workers > 1:
        options["max_workers"] = workers

    @router.subscriber(topics.TOOL_CALLS, **options)
    async def on_tool_call(message: KafkaMessage) -> None:
        """Answer one tool call; the offset commits after the result is recorded."""
        consumer = RUNTIME.get().consumer(topics.GROUP_TOOL_EXECUTOR)
        await consumer.handle(message, json_model(ExecuteToolCall), EXECUTOR.get().execute)

    return router
