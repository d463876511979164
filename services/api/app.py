"""api composition root: settings, FastAPI app, lifespan, routers."""

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response

from services.api import auth, errors, limits
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
            loops = runtime.task_owner()
            loops.start(gate.listen(settings.database_url), "key listener")
            try:
                yield
            finally:
                await loops.stop()

    gate = auth.Gate()
    app = FastAPI(title="Threadbus", version="0.1.0", lifespan=lifespan, docs_url="/docs")
    errors.install(app)
    app.add_middleware(limits.BodyLimit, max_bytes=settings.max_request_bytes)
    limiter = limits.RateLimiter(settings.rate_limit_per_minute, settings.max_streams_per_key)
    app.include_router(probes)
    app.include_router(v1)

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refused = errors.refuse_nul(request) or await auth.authenticate(
            request, request.app.state.runtime.pool, gate
        )
        response = refused or await _limited(request, call_next)
        response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
        return response

    async def _limited(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith("/v1"):
            return await call_next(request)
        client = request.client.host if request.client else None
        who = limits.RateLimiter.identity(request.headers.get("authorization"), client)
        allowed, headers = limiter.take(who)
        if not allowed:
            response: Response = limits.rate_limited(headers)
            return response
        limits.CALLER.set(limits.Caller(limiter, who))
        response = await call_next(request)
        response.headers.update(headers)
        return response

    return app
