"""api composition root: settings, FastAPI app, lifespan, routers."""

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.api import auth, bell, errors, limits, observed
from services.api.door import Door
from services.api.handlers import probes, v1
from services.api.settings import Settings
from services.core.blobs import open_store
from services.core.embeddings import open_embedder
from services.core.runtime import open_runtime


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app; the lifespan opens the pool, producer and outbox relay."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_runtime(settings, health=False, scoped=True) as runtime,
            open_embedder(settings) as embedder,
        ):
            app.state.runtime = runtime
            app.state.settings = settings
            app.state.blobs = open_store(settings, runtime.pool)
            app.state.embedder = embedder
            app.state.gate = gate
            loops = runtime.task_owner()
            loops.start(gate.listen(settings.database_url), "key listener")
            loops.start(bell.BELL.listen(settings.database_url), "stream bell")
            try:
                yield
            finally:
                await loops.stop()

    gate = auth.Gate()
    app = FastAPI(title="Threadbus", version="0.1.0", lifespan=lifespan, docs_url="/docs")
    errors.install(app)
    app.add_middleware(limits.BodyLimit, max_bytes=settings.max_request_bytes)
    limiter = limits.RateLimiter(settings.rate_limit_per_minute, settings.max_streams_per_key)
    app.add_middleware(Door, gate=gate, limiter=limiter)
    app.add_middleware(observed.Observe)  # added last: the outermost, so refusals count too
    app.include_router(probes)
    app.add_api_route("/metrics", observed.metrics_endpoint, include_in_schema=False)
    app.include_router(v1)

    return app
