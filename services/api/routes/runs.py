"""`/threads/{thread_id}/runs` and their steps."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from schemas.requests import (
    RunCreate,
    RunUpdate,
    SubmitToolOutputsBody,
    ThreadAndRunCreate,
    ThreadCreate,
    ThreadToCreate,
)
from services.api.deps import AppSettings, Conn, Listing, require_beta
from services.api.routes import out
from services.core import cancel, toolflow
from services.core.errors import InvalidRequest
from services.core.store import assistants, messages, runs, steps, threads

router = APIRouter(prefix="/threads/{thread_id}/runs", dependencies=[Depends(require_beta)])
thread_and_run = APIRouter(prefix="/threads", dependencies=[Depends(require_beta)])


def _poll_header(settings: AppSettings) -> dict[str, str]:
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


def _no_stream(stream: bool | None) -> None:
    if stream:
        raise InvalidRequest(
            "Streaming runs are not supported by this version of Threadbus yet.", param="stream"
        )


@thread_and_run.post("/runs")
async def create_thread_and_run(
    body: ThreadAndRunCreate, conn: Conn, settings: AppSettings
) -> JSONResponse:
    """Create a thread and queue a run on it, in one request."""
    _no_stream(body.stream)
    assistant = await assistants.get(conn, body.assistant_id)
    given = body.thread or ThreadToCreate()
    resources = body.tool_resources or given.tool_resources
    thread = await threads.create(
        conn,
        ThreadCreate(messages=given.messages, tool_resources=resources, metadata=given.metadata),
    )
    run = await runs.create(
        conn, thread.id, assistant, body, expires_seconds=settings.run_expires_seconds
    )
    return out(run, headers=_poll_header(settings))


@router.post("")
async def create_run(
    thread_id: str, body: RunCreate, conn: Conn, settings: AppSettings
) -> JSONResponse:
    """Queue a run of an assistant on the thread."""
    _no_stream(body.stream)
    await threads.get(conn, thread_id, lock=True)
    assistant = await assistants.get(conn, body.assistant_id)
    if (running := await runs.active(conn, thread_id)) is not None:
        raise InvalidRequest(f"Thread {thread_id} already has an active run {running}.")
    for message in body.additional_messages or []:
        await messages.create(conn, thread_id, message)
    run = await runs.create(
        conn, thread_id, assistant, body, expires_seconds=settings.run_expires_seconds
    )
    return out(run, headers=_poll_header(settings))


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
    thread_id: str, run_id: str, conn: Conn, settings: AppSettings
) -> JSONResponse:
    """Retrieve a run (the SDK's poll helpers call this)."""
    return out(await runs.get(conn, thread_id, run_id), headers=_poll_header(settings))


@router.post("/{run_id}")
async def update_run(thread_id: str, run_id: str, body: RunUpdate, conn: Conn) -> JSONResponse:
    """Modify a run's metadata."""
    await runs.get(conn, thread_id, run_id)
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
    """List a run's steps (`include[]` only adds file_search contents, which come later)."""
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
        )
    )


@router.get("/{run_id}/steps/{step_id}")
async def retrieve_run_step(
    thread_id: str, run_id: str, step_id: str, conn: Conn, include: Include = None
) -> JSONResponse:
    """Retrieve a run step."""
    _check_include(include)
    return out(await steps.get(conn, thread_id, run_id, step_id))


@router.post("/{run_id}/submit_tool_outputs")
async def submit_tool_outputs(
    thread_id: str, run_id: str, body: SubmitToolOutputsBody, conn: Conn, settings: AppSettings
) -> JSONResponse:
    """Answer every pending function call of a run in `requires_action`."""
    _no_stream(body.stream)
    run = await toolflow.submit(conn, thread_id, run_id, body.tool_outputs)
    return out(run, headers=_poll_header(settings))
