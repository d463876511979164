"""The run poll, answered at the door instead of through FastAPI's routing.

The SDK's `*_and_poll` helpers send `GET /v1/threads/{thread_id}/runs/{run_id}` every few
milliseconds while a run works, so it is most of an HTTP client's requests. Through FastAPI it
cost the API 0.9-1.6 ms of CPU for one statement (1,500 polls, as fast as they come, at several
hours): the path was matched against the routes one by one, the route's dependencies were
resolved for each request, and more middlewares (exceptions, the exit stack) wrapped it.
Answered here, 0.5-0.7 ms, measured alternately with the former.

It answers what `routes.runs.retrieve_run` answers, through the same function
(`routes.runs.poll`), at the route's own path, after the door's checks (NUL bytes, the key,
the thread's project, the rate limit); a `ThreadbusError` becomes the response the app's
handler makes of it. Anything else goes on to the app: a poll without the Assistants beta
header (the app's dependency writes that error), or one that declares a body (the app's body
limit judges it; a poll has none).
"""

import re

import asyncpg
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from services.api.errors import threadbus_error
from services.api.handlers import v1
from services.api.routes import runs as run_routes
from services.api.settings import Settings
from services.core.errors import ThreadbusError

ROUTE = v1.prefix + next(
    route.path
    for route in run_routes.router.routes
    if isinstance(route, APIRoute) and route.endpoint is run_routes.retrieve_run
)
"""`/v1/threads/{thread_id}/runs/{run_id}`, as the app routes it."""
POLL = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", ROUTE))


async def answer(scope: Scope, pool: asyncpg.Pool, settings: Settings) -> Response | None:
    """The response to a run poll, or None for any other request."""
    if scope["method"] != "GET" or (match := POLL.fullmatch(scope["path"])) is None:
        return None
    headers = Headers(scope=scope)
    beta = headers.get("openai-beta")
    if beta is None or "assistants=v2" not in beta:
        return None
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        return None
    params = match.groupdict()
    scope["path_params"] = params  # the route's template, for metrics and traces
    scope["route"] = ROUTE
    try:
        async with pool.acquire() as conn:
            return await run_routes.poll(conn, params["thread_id"], params["run_id"], settings)
    except ThreadbusError as exc:
        return threadbus_error(exc)
