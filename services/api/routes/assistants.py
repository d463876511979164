"""`/assistants`."""

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from schemas.requests import AssistantCreate, AssistantUpdate
from services.api.deps import Conn, Listing, require_beta
from services.api.routes import deleted, out
from services.core.store import assistants

router = APIRouter(prefix="/assistants", dependencies=[Depends(require_beta)])


@router.post("")
async def create_assistant(body: AssistantCreate, conn: Conn) -> JSONResponse:
    """Create an assistant."""
    return out(await assistants.create(conn, body))


@router.get("")
async def list_assistants(conn: Conn, listing: Listing) -> JSONResponse:
    """List assistants, newest first by default."""
    return out(
        await assistants.list_page(
            conn,
            limit=listing.limit,
            order=listing.order,
            after=listing.after,
            before=listing.before,
        )
    )


@router.get("/{assistant_id}")
async def retrieve_assistant(assistant_id: str, conn: Conn) -> JSONResponse:
    """Retrieve an assistant."""
    return out(await assistants.get(conn, assistant_id))


@router.post("/{assistant_id}")
async def update_assistant(assistant_id: str, body: AssistantUpdate, conn: Conn) -> JSONResponse:
    """Modify an assistant; omitted fields stay as they are."""
    return out(await assistants.update(conn, assistant_id, body))


@router.delete("/{assistant_id}")
async def delete_assistant(assistant_id: str, conn: Conn) -> dict[str, Any]:
    """Delete an assistant."""
    await assistants.delete(conn, assistant_id)
    return deleted(assistant_id, "assistant.deleted")
