"""The API's routers under /v1, and the probes (the include list is the surface)."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.routes import assistants, files, runs, threads, vector_stores

v1 = APIRouter(prefix="/v1")
v1.include_router(assistants.router)
v1.include_router(runs.thread_and_run)  # before /threads/{thread_id}
v1.include_router(threads.router)
v1.include_router(runs.router)
v1.include_router(files.router)
v1.include_router(vector_stores.router)

probes = APIRouter()


@probes.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the event loop answers."""
    return {"status": "ok"}


@probes.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: Postgres and Kafka answer."""
    ok = await request.app.state.runtime.ready()
    return JSONResponse({"status": "ok" if ok else "unavailable"}, status_code=200 if ok else 503)
