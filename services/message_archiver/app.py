"""message-archiver composition root: settings, broker, runtime."""

import contextlib
import functools
from collections.abc import AsyncIterator

from faststream import FastStream

from services.core import bus
from services.core.runtime import open_runtime, periodic
from services.message_archiver import retention
from services.message_archiver.handlers import router
from services.message_archiver.settings import Settings

settings = Settings()
settings.configure_logging()
broker = bus.make_broker(settings.kafka_bootstrap_servers, settings.service_name)
broker.include_router(router)


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Open the pool for the handler (its relay stays idle: the archiver writes no outbox),
    and prune the bookkeeping tables on a timer."""
    async with open_runtime(settings) as runtime:
        loops = runtime.task_owner()
        loops.start(
            periodic(settings.retention_interval_seconds,
                     functools.partial(retention.prune, runtime.pool, settings), "retention"),
            "retention",
        )  # fmt: skip
        try:
            yield
        finally:
            await loops.stop()


app = FastStream(broker, lifespan=lifespan)
