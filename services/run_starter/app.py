"""run-starter composition root: settings, broker, runtime."""

import contextlib
from collections.abc import AsyncIterator

from faststream import FastStream

from services.core import bus
from services.core.runtime import open_runtime
from services.run_starter.handlers import COMMITS, router
from services.run_starter.settings import Settings

settings = Settings()
settings.configure_logging()
broker = bus.make_broker(settings.kafka_bootstrap_servers, settings.service_name)
broker.include_router(router)
COMMITS.interval = settings.inbound_commit_ms / 1000


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Open the pool, producer and relay for the handlers."""
    async with open_runtime(settings):
        yield


app = FastStream(broker, lifespan=lifespan)


@app.on_shutdown
async def commit_handled() -> None:
    """Commit what was handled before the stop began (FastStream runs this before it stops
    its consumers; an event handled while they drain is read again by the next consumer, and
    seen as a duplicate)."""
    await COMMITS.commit()
