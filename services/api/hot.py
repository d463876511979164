"""The run poll, answered at the door instead of through FastAPI's routing.

The SDK's `*_and_poll` helpers send `GET /v1/threads/{thread_id}/runs/{run_id}` every few
milliseconds while a run works, so it is most of an HTTP client's requests. Through FastAPI it
cost the API about 1.8 ms of CPU for one statement (measured, 1,500 polls): the path was matched
against the routes one by one, the route's dependencies were resolved for each request, and
two more middlewares (exceptions, the exit stack) wrapped it. Answered here it costs 0.6-0.7 ms.

It answers what `routes.runs.retrieve_run` answers, through the same function
(`routes.runs.poll`), after the door's checks (NUL bytes, the key, the thread's project, the
rate limit); a `ThreadbusError` becomes the response the app's handler makes of it. Anything
else, a poll without the Assistants beta header included (the app's dependency writes that
error), goes on to the app.
"""

import re

import asyncpg
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from services.api.errors import threadbus_error
from services.api.routes import runs as run_routes
from services.api.settings import Settings
from services.core.errors import ThreadbusError

POLL = re.compile(r"/v1/threads/(?P<thread_id>[^/]+)/runs/(?P<run_id>[^/]+)")
ROUTE = "/v1/threads/{thread_id}/runs/{run_id}"


async def answer(scope: Scope, pool: asyncpg.Pool, settings: Settings) -> Response | None:
    """The response to a run poll, or None for any other request."""
    if scope["method"] != "GET" or (match := POLL.fullmatch(scope["path"])) is None:
        return None
    beta = Headers(scope=scope).get("openai-beta")
    if beta is None or "assistants=v2" not in beta:
        return None
    params = match.groupdict()
    scope["path_params"] = params  # the route's template, for metrics and traces
    scope["route"] = ROUTE
    try:
        async with pool.acquire() as conn:
            return await run_routes.poll(conn, params["thread_id"], params["run_id"], settings)
    except ThreadbusError as exc:
        return threadbus_error(exc)
