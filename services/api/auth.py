"""API keys at the door: every `/v1` request names a live key once any key exists.

While no key was ever created the API is open, and then it listens on loopback only unless
`THREADBUS_ALLOW_UNAUTHENTICATED_NETWORK_ACCESS` says otherwise (`keys.check_exposure`). A key's
project becomes the request's (`projects.CURRENT`): every connection the request uses is
scoped to it.
"""

from collections import OrderedDict
from collections.abc import Callable

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse

from schemas.common import ErrorBody
from services.api.errors import error_response
from services.core import db, keys, projects
from services.core.errors import NotFound

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header"
    " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


_PARENTS = {"threads": ("threads", "thread"), "vector_stores": ("vector_stores", "vector store")}

KEYS_CHANNEL = "threadbus_keys"
"""NOTIFY on any change to `api_keys` (migration 0010)."""
PARENTS_CHANNEL = "threadbus_parents"
"""NOTIFY `<table> <id>` on the deletion of a thread or vector store (migration 0015)."""


class Gate:
    """The door's memory: what key checks answered, and whose threads and stores are whose.

    Both are kept only while a listener hears what would change them, and emptied when it
    stops hearing (so a change is never missed): a trigger notifies `threadbus_keys` on every
    change to a key, which empties the keys' answers, and `threadbus_parents` on every
    deletion of a thread or store (migration 0015), which forgets that one. An object never
    changes project, but a thread's id can name a new thread after the old one is deleted
    (an inbound event creates a thread under the id it names, in its own project), and the
    routes under a thread are reached by its id, with the door as their project check. An
    answer asked while a change was heard is not kept (it may be older than the change). So a
    request in the steady state asks Postgres nothing here.
    """

    MAX_KEYS = 10_000
    MAX_PARENTS = 100_000

    def __init__(self) -> None:
        self._keys: dict[str | None, tuple[bool, str | None]] = {}
        self._parents: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._generation = 0
        self._parents_generation = 0
        self._listening = False

    def forget_keys(self, *_: object) -> None:
        """A key changed (or might have): ask Postgres again."""
        self._keys.clear()
        self._generation += 1

    def forget_parent(self, payload: str) -> None:
        """A thread or store was deleted (`<table> <id>`): ask Postgres again about its id."""
        table, _, object_id = payload.partition(" ")
        self._parents.pop((table, object_id), None)
        self._parents_generation += 1

    def _forget_all(self) -> None:
        self.forget_keys()
        self._parents.clear()
        self._parents_generation += 1

    async def listen(self, dsn: str) -> None:
        """Keep the memory valid until cancelled (reconnects; memory off while disconnected)."""

        async def connected(_: asyncpg.Connection) -> None:
            self._forget_all()  # changes while disconnected were not heard
            self._listening = True

        def lost() -> None:
            self._listening = False
            self._forget_all()

        channels: dict[str, Callable[[str], object]] = {
            KEYS_CHANNEL: self.forget_keys,
            PARENTS_CHANNEL: self.forget_parent,
        }
        await db.listen(dsn, channels, connected=connected, lost=lost, role="api-keys")

    async def project_of(self, pool: asyncpg.Pool, key: str | None) -> tuple[bool, str | None]:
        """(whether keys are in force, the project of `key` if it is a live one)."""
        if (known := self._keys.get(key)) is not None:
            return known
        generation = self._generation
        async with pool.acquire() as conn:
            answer = await keys.project_of(conn, key)
        # Kept only if no key changed while we asked (else the answer may be stale).
        if self._listening and generation == self._generation:
            if len(self._keys) >= self.MAX_KEYS:
                self._keys.clear()
            self._keys[key] = answer
        return answer

    def created_in(self, conn: asyncpg.Connection, table: str, object_id: str) -> None:
        """Keep the project of a thread or store (`table`) that `conn`'s transaction creates
        for the request's project, once it commits: its first request then asks Postgres
        nothing (an SDK's poll right after `create_and_run` would)."""
        project, generation = projects.CURRENT.get(), self._parents_generation
        db.on_commit(conn, lambda: self._keep((table, object_id), project, generation))

    def _keep(self, where: tuple[str, str], project: str, generation: int) -> None:
        """Keep an answer got at `generation`, unless a deletion was heard since."""
        if not self._listening or generation != self._parents_generation:
            return
        self._parents[where] = project
        self._parents.move_to_end(where)
        if len(self._parents) > self.MAX_PARENTS:
            self._parents.popitem(last=False)

    async def foreign_parent(
        self, pool: asyncpg.Pool, path: str, project: str
    ) -> JSONResponse | None:
        """A 404 for `/v1/threads/{id}/...` or `/v1/vector_stores/{id}/...` unless that thread
        or store is the project's: what lives under it (messages, runs, steps, a store's files)
        is reached by the parent's id, so another project's parent answers exactly as a
        missing one does (the same 404, whatever comes after it in the path)."""
        parts = path.split("/")  # "", "v1", "threads", "{id}", "runs", ...
        if (
            len(parts) < 5
            or parts[2] not in _PARENTS
            or (parts[2], parts[3]) == ("threads", "runs")
        ):
            return None
        table, kind = _PARENTS[parts[2]]
        where = (table, parts[3])
        owner = self._parents.get(where)
        if owner != project:  # not known, or known as another's: ask
            generation = self._parents_generation
            async with pool.acquire() as conn:
                owner = await conn.fetchval(
                    f"SELECT project_id FROM {table} WHERE id = $1", parts[3]
                )
            if owner is not None:
                self._keep(where, owner, generation)
        else:
            self._parents.move_to_end(where)
        if owner == project:
            return None
        return error_response(404, NotFound.of(kind, parts[3]).body())


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(request: Request, pool: asyncpg.Pool, gate: Gate) -> JSONResponse | None:
    """A 401 in OpenAI's shape for a `/v1` request without a live key, or None (let it in)."""
    if not request.url.path.startswith("/v1"):
        return None
    key = _bearer(request)
    enforced, project = await gate.project_of(pool, key)
    if not enforced:
        project = projects.DEFAULT
    if project is not None:
        projects.CURRENT.set(project)
        return await gate.foreign_parent(pool, request.url.path, project)
    if key is None:
        body = ErrorBody(message=MISSING, type="invalid_request_error")
    else:
        body = ErrorBody(
            message=f"Incorrect API key provided: {keys.redact(key)}.",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    return error_response(401, body)
