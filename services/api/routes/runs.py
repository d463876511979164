"""`/threads/{thread_id}/runs` and their steps."""

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from starlette.responses import Response

from schemas.requests import (
    RunCreate,
    RunUpdate,
    SubmitToolOutputsBody,
    ThreadAndRunCreate,
    ThreadCreate,
    ThreadToCreate,
)
from schemas.runs import Run
from services.api.deps import (
    AppGate,
    AppRuntime,
    AppSettings,
    Conn,
    Listing,
    ReadConn,
    require_beta,
)
from services.api.routes import out
from services.api.settings import Settings
from services.api.streaming import (
    RunStream,
    run_or_stream,
    settled_check,
    sse,
    wait_for_start,
)
from services.core import cancel, toolflow
from services.core.errors import InvalidRequest
from services.core.ids import new_id
from services.core.store import assistants, messages, runs, steps, threads

router = APIRouter(prefix="/threads/{thread_id}/runs", dependencies=[Depends(require_beta)])
thread_and_run = APIRouter(prefix="/threads", dependencies=[Depends(require_beta)])


def _poll_header(settings: Settings) -> dict[str, str]:
    return {"openai-poll-after-ms": str(settings.poll_after_ms)}


Include = Annotated[list[str] | None, Query(alias="include[]")]


FILE_SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def _check_include(include: list[str] | None) -> None:
    """The one `include[]` value the API knows (it adds file_search result contents)."""
    for value in include or []:
        if value != FILE_SEARCH_CONTENT:
            raise InvalidRequest(
                f"Invalid value for 'include[]': {value!r}. Supported: {FILE_SEARCH_CONTENT!r}.",
                param="include",
            )


@thread_and_run.post("/runs")
async def create_thread_and_run(
    body: ThreadAndRunCreate, runtime: AppRuntime, settings: AppSettings, gate: AppGate
) -> Response:
    """Create a thread and queue a run on it, in one request (`stream: true` for events)."""
    thread_id, run_id = new_id("thread"), new_id("run")

    async def work(conn: asyncpg.Connection) -> Run:
        assistant = await assistants.get(conn, body.assistant_id)
        given = body.thread or ThreadToCreate()
        thread = ThreadCreate(
            messages=given.messages,
            tool_resources=body.tool_resources or given.tool_resources,
            metadata=given.metadata,
        )
        await threads.create(conn, thread, thread_id=thread_id, for_run=run_id)
        gate.created_in(conn, "threads", thread_id)
        return await runs.create(
            conn, thread_id, assistant, body,
            expires_seconds=settings.run_expires_seconds, run_id=run_id,
        )  # fmt: skip

    return await run_or_stream(
        runtime.pool, settings.kafka_bootstrap_servers, stream=bool(body.stream),
        thread_id=thread_id, work=work, headers=_poll_header(settings),
    )  # fmt: skip


@router.post("")
async def create_run(
    thread_id: str, body: RunCreate, runtime: AppRuntime, settings: AppSettings
) -> Response:
    """Queue a run of an assistant on the thread (`stream: true` for its events)."""

    async def work(conn: asyncpg.Connection) -> Run:
        await threads.get(conn, thread_id, lock=True)
        assistant = await assistants.get(conn, body.assistant_id)
        if (running := await runs.active(conn, thread_id)) is not None:
            raise InvalidRequest(f"Thread {thread_id} already has an active run {running}.")
        for message in body.additional_messages or []:
            await messages.create(conn, thread_id, message)
        return await runs.create(
            conn, thread_id, assistant, body, expires_seconds=settings.run_expires_seconds
        )

    return await run_or_stream(
        runtime.pool, settings.kafka_bootstrap_servers, stream=bool(body.stream),
        thread_id=thread_id, work=work, headers=_poll_header(settings),
    )  # fmt: skip


@router.get("")
async def list_runs(thread_id: str, conn: Conn, listing: Listing) -> JSONResponse:
    """List the thread's runs, newest first by default."""
    await threads.get(conn, thread_id)
    return out(
        await runs.list_page(
            conn,
            thread_id,
            limit=listing.limit,
            order=listing.order,
            after=listing.after,
            before=listing.before,
        )
    )


@router.get("/{run_id}")
async def retrieve_run(
    thread_id: str, run_id: str, conn: ReadConn, settings: AppSettings
) -> JSONResponse:
    """Retrieve a run (the SDK's poll helpers; the door answers them first, `api/hot.py`)."""
    return await poll(conn, thread_id, run_id, settings)


async def poll(
    conn: asyncpg.Connection, thread_id: str, run_id: str, settings: Settings
) -> JSONResponse:
    """The run, with the poll interval the SDK's helpers follow."""
    return out(await runs.get(conn, thread_id, run_id), headers=_poll_header(settings))


@router.post("/{run_id}")
async def update_run(thread_id: str, run_id: str, body: RunUpdate, conn: Conn) -> JSONResponse:
    """Modify a run's metadata."""
    run = await runs.get(conn, thread_id, run_id)
    if "metadata" not in body.model_fields_set:
        return out(run)
    row = await conn.fetchrow(
        "UPDATE runs SET metadata = $2 WHERE id = $1 RETURNING *", run_id, body.metadata or {}
    )
    return out(runs.render(dict(row)))


@router.post("/{run_id}/cancel")
async def cancel_run(
    thread_id: str, run_id: str, conn: Conn, settings: AppSettings
) -> JSONResponse:
    """Cancel an active run: `cancelling` while a worker stops it, or `cancelled` at once."""
    run = await cancel.request(
        conn, thread_id, run_id, expires_seconds=settings.run_expires_seconds
    )
    return out(run, headers=_poll_header(settings))


@router.get("/{run_id}/steps")
async def list_run_steps(
    thread_id: str, run_id: str, conn: Conn, listing: Listing, include: Include = None
) -> JSONResponse:
    """List a run's steps (`include[]` adds the text of file_search results)."""
    _check_include(include)
    await runs.get(conn, thread_id, run_id)
    return out(
        await steps.list_page(
            conn,
            thread_id,
            run_id,
            limit=listing.limit,
            order=listing.order,
            after=listing.after,
            before=listing.before,
            with_content=bool(include),
        )
    )


@router.get("/{run_id}/steps/{step_id}")
async def retrieve_run_step(
    thread_id: str, run_id: str, step_id: str, conn: Conn, include: Include = None
) -> JSONResponse:
    """Retrieve a run step."""
    _check_include(include)
    return out(await steps.get(conn, thread_id, run_id, step_id, with_content=bool(include)))


@router.post("/{run_id}/submit_tool_outputs")
async def submit_tool_outputs(
    thread_id: str,
    run_id: str,
    body: SubmitToolOutputsBody,
    runtime: AppRuntime,
    settings: AppSettings,
) -> Response:
    """Answer every pending function call of a run in `requires_action` (or stream on)."""

    async def work(conn: asyncpg.Connection) -> Run:
        return await toolflow.submit(conn, thread_id, run_id, body.tool_outputs)

    return await run_or_stream(
        runtime.pool, settings.kafka_bootstrap_servers, stream=bool(body.stream),
        thread_id=thread_id, work=work, headers=_poll_header(settings),
    )  # fmt: skip


@router.get("/{run_id}/events")
async def stream_run_events(
    thread_id: str,
    run_id: str,
    runtime: AppRuntime,
    settings: AppSettings,
    last_event_id: Annotated[str | None, Header()] = None,
    after: str | None = None,
) -> Response:
    """The run's events as SSE, from the start or after `Last-Event-ID` (or `?after=`).

    Beyond the hosted API: a client that lost its stream reconnects here and gets what it
    missed, then the live rest; the stream ends with `done` once the run ends or needs action.
    """
    async with runtime.pool.acquire() as conn:
        await runs.get(conn, thread_id, run_id)
    position = last_event_id or after
    if position is None:
        start = await wait_for_start(runtime.pool, run_id)
        if start is None:
            raise InvalidRequest(f"The events of run {run_id!r} are not published yet.")
        partition, offset = _position(start)
    else:
        partition, offset = _position(position)
    reader = RunStream(settings.kafka_bootstrap_servers)
    try:
        await reader.open_at(thread_id, partition, offset, run_id, after=position is not None)
    except BaseException:
        await reader.close()
        raise
    return sse(reader.frames(run_id, settled=settled_check(runtime.pool, run_id)))


def _position(event_id: str) -> tuple[int, int]:
    partition, sep, offset = event_id.partition("-")
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise InvalidRequest(
            f"Invalid event id {event_id!r}: expected '<partition>-<offset>'.",
            param="Last-Event-ID",
        )
    return int(partition), int(offset)
