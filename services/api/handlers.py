"""The API's routers under /v1, and the probes (the include list is the surface)."""

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.routes import assistants, files, runs, threads, vector_stores
from services.core import db
from services.core.runtime import Runtime, consuming

RUN_POLLER = "run-poller"

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
async def readyz(request: Request, scope: Literal["system", "self"] = "system") -> JSONResponse:
    """Readiness: a run created now starts at once.

    This API's Postgres and Kafka answer, its loops run, and (unless `scope=self`) a live
    run-poller has joined its consumer group. Kubernetes probes `scope=self`: an API replica
    whose run-pollers are away can still serve reads and queue runs.
    """
    runtime: Runtime = request.app.state.runtime
    problem = None
    if not await runtime.ready():
        problem = "this API cannot reach Postgres or Kafka, or a background loop died"
    elif scope == "system":
        try:
            async with runtime.pool.acquire(timeout=2) as conn:
                if not await consuming(conn, RUN_POLLER):
                    problem = "no run-poller is consuming yet: a run would wait"
        except db.ERRORS:
            problem = "this API cannot reach Postgres"
    if problem is not None:
        return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
    return JSONResponse({"status": "ok"})
