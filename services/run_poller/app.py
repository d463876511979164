"""run-poller composition root: settings, broker, engine, sweeper."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from faststream import FastStream

from services.core import bus, tokens
from services.core.model import ModelClient
from services.core.runtime import open_runtime, periodic
from services.run_poller.engine import Engine
from services.run_poller.handlers import ENGINE, router
from services.run_poller.settings import Settings

settings = Settings()
settings.configure_logging()
broker = bus.make_broker(settings.kafka_bootstrap_servers, settings.service_name)
broker.include_router(router)


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Open the runtime and the model client; sweep Postgres on a timer; drain on shutdown."""
    model = ModelClient(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        timeout=settings.model_timeout_seconds,
        max_retries=settings.model_max_retries,
        backoff=settings.model_retry_backoff_seconds,
    )
    async with open_runtime(settings) as runtime:
        # The tokenizer loads on first use: load it now, not during the first run.
        await asyncio.to_thread(tokens.count, "warm up")
        engine = Engine(runtime.pool, model, settings, runtime.owner)
        ENGINE.set(engine)
        loops = runtime.task_owner()
        loops.start(periodic(settings.sweep_interval_seconds, engine.sweep, "sweep"), "sweeper")
        loops.start(engine.listen(), "run listener")
        try:
            yield
        finally:
            await loops.stop()
            await engine.shutdown(grace=10)
            await model.close()


app = FastStream(broker, lifespan=lifespan)
