"""tool-executor composition root: settings, broker, runtime."""

import contextlib
from collections.abc import AsyncIterator

from faststream import ContextRepo, FastStream

from services.core import bus
from services.core.runtime import open_runtime
from services.tool_executor.handlers import router
from services.tool_executor.settings import Settings

settings = Settings()
settings.configure_logging()
broker = bus.make_broker(settings.kafka_bootstrap_servers, settings.service_name)
broker.include_router(router)


@contextlib.asynccontextmanager
async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
    """Open the pool for the handler."""
    async with open_runtime(settings) as runtime:
        context.set_global("runtime", runtime)
        yield


app = FastStream(broker, lifespan=lifespan)
