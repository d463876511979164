"""file-indexer subscriber: `threadbus.ingest` (the decorator is the topology)."""

import logging
from typing import Annotated

from faststream import Context
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage

from schemas import topics
from schemas.events import IndexFile
from services.core import bus
from services.core.consuming import json_model
from services.core.runtime import Runtime
from services.file_indexer.indexer import Indexer

log = logging.getLogger(__name__)

router = KafkaRouter()

IndexerDep = Annotated[Indexer, Context("indexer")]
RuntimeDep = Annotated[Runtime, Context("runtime")]


@router.subscriber(topics.INGEST, **bus.subscriber_options(topics.GROUP_FILE_INDEXER))
async def on_index_file(message: KafkaMessage, runtime: RuntimeDep, indexer: IndexerDep) -> None:
    """A wake-up: the pull loop claims the file (or any other waiting one) if there is room.

    The vector store file row is the truth, so a duplicate, stale or late order changes nothing:
    a completed, cancelled or re-attached file is not waiting, and a leased one is taken.
    """

    async def wake(order: IndexFile) -> None:
        log.debug("order to index %s into %s", order.file_id, order.vector_store_id)
        indexer.wake()

    await runtime.consumer(topics.GROUP_FILE_INDEXER).handle(message, json_model(IndexFile), wake)
