"""`/threads/{thread_id}/runs` and their steps."""

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from schemas.requests import RunCreate, SubmitToolOutputsBody
from services.api.deps import AppSettings, Conn, Listing, require_beta
from services.api.routes import out
from services.core import toolflow
from services.core.errors import InvalidRequest
from services.core.store import assistants, messages, runs, steps, threads

router = APIRouter(prefix="/threads/{thread_id}/runs", dependencies=[Depends(require_beta)])


def _poll_header(settings: AppSettings) -> dict[str, str]:
    return {"openai-poll-after-ms": str(settings.poll_after_ms)}


@router.post("")
async def create_run(
    thread_id: str, body: RunCreate, conn: Conn, settings: AppSettings
) -> JSONResponse:
    """Queue a run of an assistant on the thread."""
    if body.stream:
        raise InvalidRequest(
            "Streaming runs are not supported by this version of Threadbus yet.", param="stream"
        )
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


@router.get("/{run_id}/steps")
async def list_run_steps(thread_id: str, run_id: str, conn: Conn, listing: Listing) -> JSONResponse:
    """List a run's steps."""
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
async def retrieve_run_step(thread_id: str, run_id: str, step_id: str, conn: Conn) -> JSONResponse:
    """Retrieve a run step."""
    return out(await steps.get(conn, thread_id, run_id, step_id))


@router.post("/{run_id}/submit_tool_outputs")
async def submit_tool_outputs(
    thread_id: str, run_id: str, body: SubmitToolOutputsBody, conn: Conn, settings: AppSettings
) -> JSONResponse:
    """Answer every pending function call of a run in `requires_action`."""
    if body.stream:
        raise InvalidRequest(
            "Streaming runs are not supported by this version of Threadbus yet.", param="stream"
        )
    run = await toolflow.submit(conn, thread_id, run_id, body.tool_outputs)
    return out(run, headers=_poll_header(settings))
