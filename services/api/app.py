"""api composition root: settings, FastAPI app, lifespan, routers."""

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response

from services.api import errors
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
            open_runtime(settings, health=False) as runtime,
            open_embedder(settings) as embedder,
        ):
            app.state.runtime = runtime
            app.state.settings = settings
            app.state.blobs = open_store(settings, runtime.pool)
            app.state.embedder = embedder
            yield

    app = FastAPI(title="Threadbus", version="0.1.0", lifespan=lifespan, docs_url="/docs")
    errors.install(app)
    app.include_router(probes)
    app.include_router(v1)

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = errors.refuse_nul(request) or await call_next(request)
        response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
        return response

    return app
