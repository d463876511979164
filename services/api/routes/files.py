"""`/files`: uploads streamed into the blob store, listing, download and delete."""

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from schemas.files import UploadPurpose
from services.api import uploads
from services.api.deps import AppBlobs, AppRuntime, AppSettings, Conn
from services.api.routes import out
from services.core.errors import InvalidRequest, PayloadTooLarge
from services.core.ids import new_id
from services.core.store import files

router = APIRouter(prefix="/files")

MULTIPART_OVERHEAD = 64 * 1024
"""Room for the form's other fields and boundaries beyond the file itself."""
EXPIRY_SECONDS = (3600, 2_592_000)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"File is too large: the maximum size is {limit} bytes.",
        param="file",
        code="file_too_large",
    )


def _expiry(anchor: object, seconds: object) -> int | None:
    """`expires_after[anchor]` / `expires_after[seconds]` as a number of seconds."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid 'expires_after.anchor': expected 'created_at'.", param="expires_after.anchor"
        )
    try:
        value = int(str(seconds))
    except ValueError:
        value = -1
    low, high = EXPIRY_SECONDS
    if not low <= value <= high:
        raise InvalidRequest(
            f"Invalid 'expires_after.seconds': expected an integer from {low} to {high},"
            f" got {seconds!r}.",
            param="expires_after.seconds",
        )
    return value


@router.post("")
async def create_file(
    request: Request, runtime: AppRuntime, blobs: AppBlobs, settings: AppSettings
) -> JSONResponse:
    """Upload a file (multipart `file` and `purpose`), stored in parts as the bytes arrive."""
    limit = settings.max_file_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise _too_large(limit)  # refused before a byte of the body is read
    file_id = new_id("file")
    upload = await uploads.receive(request, blobs, file_id, limit)
    try:
        purpose = upload.fields.get("purpose")
        if purpose is None:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in get_args(UploadPurpose):
            raise InvalidRequest(
                f"Invalid value for 'purpose': {purpose!r}. Expected one of"
                f" {', '.join(get_args(UploadPurpose))}.",
                param="purpose",
            )
        fields = upload.fields
        expires = _expiry(fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]"))
        if expires is None and purpose == "batch":
            expires = 30 * 86400
        if upload.size == 0:
            raise InvalidRequest("File is empty.", param="file", code="empty_file")
    except InvalidRequest:
        await blobs.delete(file_id)
        raise
    # A connection only once the bytes are stored: a slow upload holds no database session.
    async with runtime.pool.acquire() as conn:
        created = await files.create(
            conn,
            file_id=file_id,
            filename=upload.filename or "upload",
            purpose=purpose,
            size=upload.size,
            blob_key=file_id,
            expires_seconds=expires,
        )
    return out(created)


@router.get("")
async def list_files(
    conn: Conn,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> JSONResponse:
    """List files, newest first by default."""
    page = await files.list_page(conn, purpose=purpose, limit=limit, order=order, after=after)
    return out(page)


@router.get("/{file_id}")
async def retrieve_file(file_id: str, conn: Conn) -> JSONResponse:
    """Retrieve a file's metadata."""
    return out(await files.get(conn, file_id))


@router.delete("/{file_id}")
async def delete_file(
    file_id: str, conn: Conn, blobs: AppBlobs, background: BackgroundTasks
) -> dict[str, Any]:
    """Delete a file: it leaves every vector store; its bytes go once the delete commits."""
    key = await files.delete(conn, file_id)
    background.add_task(blobs.delete, key)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/{file_id}/content")
async def file_content(file_id: str, conn: Conn, blobs: AppBlobs) -> StreamingResponse:
    """The file's bytes, streamed from the blob store (every purpose may be downloaded)."""
    row = await files.get_row(conn, file_id)
    return StreamingResponse(
        blobs.get(row["blob_key"]),
        media_type="application/octet-stream",
        headers={"content-length": str(row["bytes"])},
    )
