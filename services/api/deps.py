"""FastAPI dependencies: a pooled connection in a transaction, settings, list parameters."""

from collections.abc import AsyncIterator
from typing import Annotated, Literal

import asyncpg
from fastapi import Depends, Header, Query, Request

from services.api.auth import Gate
from services.api.settings import Settings
from services.core.blobs import BlobStore
from services.core.embeddings import Embedder
from services.core.errors import InvalidRequest
from services.core.runtime import Runtime


async def _connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    async with pool.acquire() as conn, conn.transaction():
        yield conn


async def _read_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    async with pool.acquire() as conn:
        yield conn


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


async def _blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


async def _embedder(request: Request) -> Embedder:
    embedder: Embedder = request.app.state.embedder
    return embedder


# Every dependency is async: FastAPI runs a plain function in a worker thread, a thread hop
# per dependency per request.
# scope="function": the transaction commits before the response is sent, so a client that
# reads right after a write sees it (the default scope finishes after the response).
Conn = Annotated[asyncpg.Connection, Depends(_connection, scope="function")]
ReadConn = Annotated[asyncpg.Connection, Depends(_read_connection, scope="function")]
"""A pooled connection outside a transaction, for a route that reads in one statement: no
BEGIN and COMMIT round trips (the run poll's route, which the door answers before it in most
cases: `api/hot.py`). The project scope is a session setting of the connection, so it holds
here too."""
AppSettings = Annotated[Settings, Depends(_settings)]
AppRuntime = Annotated[Runtime, Depends(_runtime)]
AppGate = Annotated[Gate, Depends(_gate)]
AppBlobs = Annotated[BlobStore, Depends(_blobs)]
AppEmbedder = Annotated[Embedder, Depends(_embedder)]


class ListParams:
    """`limit`, `order`, `after`, `before`, validated as the hosted API does."""

    def __init__(
        self, limit: int, order: Literal["asc", "desc"], after: str | None, before: str | None
    ):
        if limit > 100:
            raise InvalidRequest(
                "Invalid 'limit': integer above maximum value. Expected a value <= 100,"
                f" but got {limit} instead.",
                param="limit",
                code="integer_above_max_value",
            )
        if limit < 1:
            raise InvalidRequest(
                "Invalid 'limit': integer below minimum value. Expected a value >= 1,"
                f" but got {limit} instead.",
                param="limit",
                code="integer_below_min_value",
            )
        self.limit = limit
        self.order: Literal["asc", "desc"] = order
        self.after = after
        self.before = before


async def _list_params(
    limit: Annotated[int, Query()] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    after: Annotated[str | None, Query()] = None,
    before: Annotated[str | None, Query()] = None,
) -> ListParams:
    return ListParams(limit, order, after, before)


Listing = Annotated[ListParams, Depends(_list_params)]


async def require_beta(openai_beta: Annotated[str | None, Header()] = None) -> None:
    """The Assistants endpoints want `OpenAI-Beta: assistants=v2`, as the hosted API did."""
    if openai_beta is None or "assistants=v2" not in openai_beta:
        raise InvalidRequest(
            "You must provide the 'OpenAI-Beta' header to access the Assistants API."
            " Please try again by setting the header 'OpenAI-Beta: assistants=v2'.",
            code="invalid_beta",
        )
