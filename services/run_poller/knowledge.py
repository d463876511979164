"""Before a run with file_search asks the model: its vector stores must be usable.

As in the hosted API, a run fails when a store it searches has expired, and waits (up to a
minute by default) for files still being indexed in the thread's own store.
"""

import asyncio

import asyncpg

from schemas.runs import Run
from services.core.store import vector_stores

POLL_SECONDS = 0.25


async def wait_until_searchable(pool: asyncpg.Pool, run: Run, wait_seconds: float) -> str | None:
    """None once the run's stores can be searched; else why the run must fail."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        async with pool.acquire() as conn:
            assistant_ids, thread_ids = await vector_stores.of_run(
                conn, run.thread_id, run.assistant_id
            )
            stores = {
                r["id"]: r
                for r in await conn.fetch(
                    "SELECT id, status, expires_at FROM vector_stores_v WHERE id = ANY($1::text[])",
                    assistant_ids + thread_ids,
                )
            }
        for store_id, store in stores.items():
            if store["status"] == "expired":
                return (
                    f"Vector store {store_id!r} used by this run expired at {store['expires_at']}"
                    " (its expires_after policy); attach a new vector store, or extend the"
                    " policy, and create a new run."
                )
        indexing = [i for i in thread_ids if i in stores and stores[i]["status"] == "in_progress"]
        if not indexing or asyncio.get_running_loop().time() >= deadline:
            return None
        await asyncio.sleep(POLL_SECONDS)
