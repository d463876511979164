"""run-poller subscribers: wake-ups on `threadbus.runs` (the decorators are the topology)."""

import logging
from typing import Annotated

from faststream import Context
from faststream.kafka import KafkaRouter

from schemas import topics
from schemas.events import ProcessRun
from services.core import bus
from services.run_poller.engine import Engine

log = logging.getLogger(__name__)

router = KafkaRouter()

EngineDep = Annotated[Engine, Context("engine")]


@router.subscriber(topics.RUNS, **bus.subscriber_options(topics.GROUP_RUN_POLLER))
async def on_process_run(order: ProcessRun, engine: EngineDep) -> None:
    """Claim the run and drive it in a task; the offset commits right after the claim.

    A wake-up is only a hint: the run row decides. A duplicate or late wake-up finds the run
    claimed or finished and does nothing.
    """
    if await engine.offer(order.run_id):
        log.debug("claimed run %s", order.run_id)
