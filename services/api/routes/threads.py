"""`/threads` and `/threads/{thread_id}/messages`."""

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from schemas.requests import MessageCreate, MessageUpdate, ThreadCreate, ThreadUpdate
from services.api.deps import AppGate, Conn, Listing, require_beta
from services.api.routes import deleted, out
from services.core.errors import InvalidRequest, NotFound
from services.core.store import messages, runs, threads

router = APIRouter(prefix="/threads", dependencies=[Depends(require_beta)])


@router.post("")
async def create_thread(
    conn: Conn, gate: AppGate, body: ThreadCreate | None = None
) -> JSONResponse:
    """Create a thread, with its initial messages in order."""
    thread = await threads.create(conn, body or ThreadCreate())
    gate.created_in(conn, "threads", thread.id)
    return out(thread)


@router.get("/{thread_id}")
async def retrieve_thread(thread_id: str, conn: Conn) -> JSONResponse:
    """Retrieve a thread."""
    return out(await threads.get(conn, thread_id))


@router.post("/{thread_id}")
async def update_thread(thread_id: str, body: ThreadUpdate, conn: Conn) -> JSONResponse:
    """Modify a thread's metadata or tool resources."""
    return out(await threads.update(conn, thread_id, body))


@router.delete("/{thread_id}")
async def delete_thread(thread_id: str, conn: Conn) -> dict[str, Any]:
    """Delete a thread with everything in it."""
    await threads.delete(conn, thread_id)
    return deleted(thread_id, "thread.deleted")


@router.post("/{thread_id}/messages")
async def create_message(thread_id: str, body: MessageCreate, conn: Conn) -> JSONResponse:
    """Add a message; refused while a run is active on the thread."""
    await threads.get(conn, thread_id, lock=True)
    if (running := await runs.active(conn, thread_id)) is not None:
        raise InvalidRequest(f"Can't add messages to {thread_id} while a run {running} is active.")
    return out(await messages.create(conn, thread_id, body))


@router.get("/{thread_id}/messages")
async def list_messages(
    thread_id: str, conn: Conn, listing: Listing, run_id: str | None = None
) -> JSONResponse:
    """List a thread's messages, newest first by default."""
    await threads.get(conn, thread_id)
    return out(
        await messages.list_page(
            conn,
            thread_id,
            run_id=run_id,
            limit=listing.limit,
            order=listing.order,
            after=listing.after,
            before=listing.before,
        )
    )


@router.get("/{thread_id}/messages/{message_id}")
async def retrieve_message(thread_id: str, message_id: str, conn: Conn) -> JSONResponse:
    """Retrieve a message."""
    await threads.get(conn, thread_id)
    return out(await messages.get(conn, thread_id, message_id))


@router.post("/{thread_id}/messages/{message_id}")
async def update_message(
    thread_id: str, message_id: str, body: MessageUpdate, conn: Conn
) -> JSONResponse:
    """Modify a message's metadata."""
    message = await messages.get(conn, thread_id, message_id)
    if "metadata" not in body.model_fields_set:
        return out(message)
    row = await conn.fetchrow(
        "UPDATE messages SET metadata = $2 WHERE id = $1 RETURNING *",
        message_id,
        body.metadata or {},
    )
    if row is None:
        raise NotFound.of("message", message_id)
    return out(messages.render(dict(row)))


@router.delete("/{thread_id}/messages/{message_id}")
async def delete_message(thread_id: str, message_id: str, conn: Conn) -> dict[str, Any]:
    """Delete a message."""
    await messages.get(conn, thread_id, message_id)
    await conn.execute("DELETE FROM messages WHERE id = $1", message_id)
    return deleted(message_id, "thread.message.deleted")
