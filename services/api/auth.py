"""API keys at the door: every `/v1` request names a live key once any key exists.

While no key was ever created the API is open, and then it listens on loopback only unless
`THREADBUS_ALLOW_UNAUTHENTICATED_NETWORK_ACCESS` says otherwise (`keys.check_exposure`). A key's
project becomes the request's (`projects.CURRENT`): every connection the request uses is
scoped to it.
"""

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse

from schemas.common import ErrorBody
from services.api.errors import error_response
from services.core import keys, projects
from services.core.errors import NotFound

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header"
    " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


_PARENTS = {"threads": ("threads", "thread"), "vector_stores": ("vector_stores", "vector store")}


async def _foreign_parent(conn: asyncpg.Connection, path: str, project: str) -> JSONResponse | None:
    """A 404 for `/v1/threads/{id}/...` or `/v1/vector_stores/{id}/...` unless that thread or
    store is the project's: what lives under it (messages, runs, steps, a store's files) is
    reached by the parent's id, so another project's parent answers exactly as a missing
    one does (the same 404, whatever comes after it in the path)."""
    parts = path.split("/")  # "", "v1", "threads", "{id}", "runs", ...
    if len(parts) < 5 or parts[2] not in _PARENTS or (parts[2], parts[3]) == ("threads", "runs"):
        return None
    table, kind = _PARENTS[parts[2]]
    mine = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1 AND project_id = $2)",
        parts[3],
        project,
    )
    return None if mine else error_response(404, NotFound.of(kind, parts[3]).body())


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(request: Request, pool: asyncpg.Pool) -> JSONResponse | None:
    """A 401 in OpenAI's shape for a `/v1` request without a live key, or None (let it in)."""
    if not request.url.path.startswith("/v1"):
        return None
    key = _bearer(request)
    async with pool.acquire() as conn:
        enforced, project = await keys.project_of(conn, key)
        if not enforced:
            project = projects.DEFAULT
        if project is not None:
            projects.CURRENT.set(project)
            return await _foreign_parent(conn, request.url.path, project)
    if key is None:
        body = ErrorBody(message=MISSING, type="invalid_request_error")
    else:
        body = ErrorBody(
            message=f"Incorrect API key provided: {keys.redact(key)}.",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    return error_response(401, body)
