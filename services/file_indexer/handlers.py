"""file-indexer subscriber: `threadbus.ingest` (the decorator is the topology)."""

import logging

from faststream.kafka import KafkaRouter
from faststream.kafka.message import KafkaMessage

from schemas import topics
from schemas.events import IndexFile
from services.core import bus
from services.core.consuming import json_model
from services.core.runtime import RUNTIME, Slot
from services.file_indexer.indexer import Indexer

log = logging.getLogger(__name__)

router = KafkaRouter()

INDEXER: Slot[Indexer] = Slot("the indexer")


@router.subscriber(
    topics.INGEST, **bus.subscriber_options(topics.GROUP_FILE_INDEXER, background=True)
)
async def on_index_file(message: KafkaMessage) -> None:
    """A wake-up: the pull loop claims the file (or any other waiting one) if there is room.

    The vector store file row is the truth, so a duplicate, stale or late order changes nothing:
    a completed, cancelled or re-attached file is not waiting, and a leased one is taken.
    """

    async def wake(order: IndexFile) -> None:
        log.debug("order to index %s into %s", order.file_id, order.vector_store_id)
        INDEXER.get().wake()

    await (
        RUNTIME.get()
        .consumer(topics.GROUP_FILE_INDEXER)
        .handle(message, json_model(IndexFile), wake)
    )
