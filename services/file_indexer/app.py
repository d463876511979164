"""file-indexer composition root: settings, broker, embedder, blob store, the pull loop."""

import contextlib
from collections.abc import AsyncIterator

from faststream import FastStream

from services.core import bus
from services.core.blobs import open_store
from services.core.embeddings import open_embedder
from services.core.runtime import open_runtime
from services.file_indexer.handlers import INDEXER, router
from services.file_indexer.indexer import Indexer
from services.file_indexer.settings import Settings

settings = Settings()
settings.configure_logging()
broker = bus.make_broker(settings.kafka_bootstrap_servers, settings.service_name)
broker.include_router(router)


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Open the runtime, load the embedder, pull work until shutdown, then hand files back."""
    async with open_runtime(settings) as runtime, open_embedder(settings) as embedder:
        indexer = Indexer(runtime.pool, open_store(settings, runtime.pool), embedder, settings,
                          runtime.owner)  # fmt: skip
        INDEXER.set(indexer)
        loops = runtime.task_owner()
        loops.start(indexer.pull(), "pull files")
        try:
            yield
        finally:
            await loops.stop()
            await indexer.shutdown(grace=10)


app = FastStream(broker, lifespan=lifespan)
