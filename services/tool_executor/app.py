"""tool-executor composition root: settings, broker, handlers, heartbeat."""

import contextlib
import os
import socket
from collections.abc import AsyncIterator

import httpx
from faststream import ContextRepo, FastStream

from services.core import bus
from services.core.embeddings import open_embedder
from services.core.runtime import TaskOwner, open_runtime, periodic
from services.tool_executor.executor import Executor
from services.tool_executor.file_search import FileSearch
from services.tool_executor.handlers import build_router
from services.tool_executor.registry import load_handlers
from services.tool_executor.settings import Settings

settings = Settings()
settings.configure_logging()
broker = bus.make_broker(settings.kafka_bootstrap_servers, settings.service_name)
broker.include_router(build_router(settings.workers))


@contextlib.asynccontextmanager
async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
    """Load the handlers, advertise them, and answer calls until shutdown."""
    async with (
        open_runtime(settings) as runtime,
        httpx.AsyncClient(timeout=settings.function_timeout_seconds) as client,
        open_embedder(settings) as embedder,
    ):
        handlers = load_handlers(
            functions=settings.functions,
            webhooks=settings.function_webhooks,
            secret=settings.webhook_secret,
            timeout=settings.function_timeout_seconds,
            client=client,
        )
        owner = f"{socket.gethostname()}:{os.getpid()}"
        executor = Executor(runtime.pool, handlers, owner, FileSearch(runtime.pool, embedder))
        context.set_global("executor", executor)
        loops = TaskOwner()
        loops.start(periodic(settings.heartbeat_seconds, executor.advertise, "advertise"), "ads")
        try:
            yield
        finally:
            await loops.stop()


app = FastStream(broker, lifespan=lifespan)
