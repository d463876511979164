"""`/vector_stores`: stores, their files and batches, and search."""

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from schemas.vector_stores import (
    ContentText,
    FileBatchCreate,
    FileContentPage,
    SearchRequest,
    SearchResult,
    SearchResultsPage,
    VectorStoreCreate,
    VectorStoreFileCreate,
    VectorStoreFileUpdate,
    VectorStoreUpdate,
    resolve_chunking,
)
from services.api.deps import AppEmbedder, AppGate, Conn, Listing
from services.api.routes import deleted, out
from services.core import search
from services.core.store import files, vector_store_files, vector_stores

router = APIRouter(prefix="/vector_stores")

FileStatus = Literal["in_progress", "completed", "failed", "cancelled"]


@router.post("")
async def create_vector_store(body: VectorStoreCreate, conn: Conn, gate: AppGate) -> JSONResponse:
    """Create a store; its files are ingested asynchronously."""
    store = await vector_stores.create(conn, body)
    gate.created_in(conn, "vector_stores", store.id)
    return out(store)


@router.get("")
async def list_vector_stores(conn: Conn, listing: Listing) -> JSONResponse:
    """List stores, newest first by default."""
    return out(
        await vector_stores.list_page(
            conn,
            limit=listing.limit,
            order=listing.order,
            after=listing.after,
            before=listing.before,
        )
    )


@router.get("/{store_id}")
async def retrieve_vector_store(store_id: str, conn: Conn) -> JSONResponse:
    """Retrieve a store with its file counts and status."""
    return out(await vector_stores.get(conn, store_id))


@router.post("/{store_id}")
async def update_vector_store(store_id: str, body: VectorStoreUpdate, conn: Conn) -> JSONResponse:
    """Modify a store's name, expiry policy or metadata."""
    return out(await vector_stores.update(conn, store_id, body))


@router.delete("/{store_id}")
async def delete_vector_store(store_id: str, conn: Conn) -> dict[str, Any]:
    """Delete a store (its files stay)."""
    await vector_stores.delete(conn, store_id)
    return deleted(store_id, "vector_store.deleted")


@router.post("/{store_id}/search")
async def search_vector_store(
    store_id: str, body: SearchRequest, conn: Conn, embedder: AppEmbedder
) -> JSONResponse:
    """Hybrid search of one store; `rewrite_query` is accepted and the query used as given."""
    await vector_stores.usable(conn, [store_id])
    threshold = body.ranking_options.score_threshold if body.ranking_options else 0.0
    hits = await search.search(
        conn,
        embedder,
        [store_id],
        body.queries(),
        limit=body.max_num_results,
        filters=body.filters,
        score_threshold=threshold,
    )
    await vector_stores.touch(conn, [store_id])
    results = [
        SearchResult(
            file_id=h.file_id,
            filename=h.filename,
            score=h.score,
            attributes=h.attributes,
            content=[ContentText(text=h.text)],
        )
        for h in hits
    ]
    return out(SearchResultsPage(search_query=body.queries(), data=results))


@router.post("/{store_id}/files")
async def create_vector_store_file(
    store_id: str, body: VectorStoreFileCreate, conn: Conn
) -> JSONResponse:
    """Add a file to the store, `in_progress` until the file-indexer has indexed it."""
    await vector_stores.get(conn, store_id, lock=True)
    await files.existing(conn, [body.file_id])
    attached = await vector_store_files.attach(
        conn,
        store_id,
        body.file_id,
        attributes=body.attributes,
        chunking=resolve_chunking(body.chunking_strategy),
    )
    return out(attached)


@router.get("/{store_id}/files")
async def list_vector_store_files(
    store_id: str, conn: Conn, listing: Listing, filter: FileStatus | None = None
) -> JSONResponse:
    """List the store's files, optionally of one status."""
    await vector_stores.get(conn, store_id)
    return out(
        await vector_store_files.list_page(
            conn,
            store_id,
            status=filter,
            limit=listing.limit,
            order=listing.order,
            after=listing.after,
            before=listing.before,
        )
    )


@router.get("/{store_id}/files/{file_id}")
async def retrieve_vector_store_file(store_id: str, file_id: str, conn: Conn) -> JSONResponse:
    """Retrieve a file of the store with its status."""
    return out(await vector_store_files.get(conn, store_id, file_id))


@router.post("/{store_id}/files/{file_id}")
async def update_vector_store_file(
    store_id: str, file_id: str, body: VectorStoreFileUpdate, conn: Conn
) -> JSONResponse:
    """Replace a file's attributes."""
    return out(await vector_store_files.set_attributes(conn, store_id, file_id, body.attributes))


@router.delete("/{store_id}/files/{file_id}")
async def delete_vector_store_file(store_id: str, file_id: str, conn: Conn) -> dict[str, Any]:
    """Remove a file from the store (the File stays)."""
    await vector_store_files.detach(conn, store_id, file_id)
    return deleted(file_id, "vector_store.file.deleted")


@router.get("/{store_id}/files/{file_id}/content")
async def vector_store_file_content(store_id: str, file_id: str, conn: Conn) -> JSONResponse:
    """The file's parsed text."""
    text = await vector_store_files.content(conn, store_id, file_id)
    return out(FileContentPage(data=[ContentText(text=text)] if text else []))


@router.post("/{store_id}/file_batches")
async def create_file_batch(store_id: str, body: FileBatchCreate, conn: Conn) -> JSONResponse:
    """Add many files at once."""
    await vector_stores.get(conn, store_id, lock=True)
    entries = body.entries()
    await files.existing(conn, [e.file_id for e in entries])
    return out(await vector_store_files.create_batch(conn, store_id, entries))


@router.get("/{store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(store_id: str, batch_id: str, conn: Conn) -> JSONResponse:
    """Retrieve a batch with its file counts."""
    return out(await vector_store_files.get_batch(conn, store_id, batch_id))


@router.post("/{store_id}/file_batches/{batch_id}/cancel")
async def cancel_file_batch(store_id: str, batch_id: str, conn: Conn) -> JSONResponse:
    """Cancel the files of the batch not yet indexed."""
    return out(await vector_store_files.cancel_batch(conn, store_id, batch_id))


@router.get("/{store_id}/file_batches/{batch_id}/files")
async def list_file_batch_files(
    store_id: str, batch_id: str, conn: Conn, listing: Listing, filter: FileStatus | None = None
) -> JSONResponse:
    """List the files of a batch."""
    await vector_store_files.get_batch(conn, store_id, batch_id)
    return out(
        await vector_store_files.list_page(
            conn,
            store_id,
            status=filter,
            batch_id=batch_id,
            limit=listing.limit,
            order=listing.order,
            after=listing.after,
            before=listing.before,
        )
    )
