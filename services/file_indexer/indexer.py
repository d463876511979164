"""Indexing one vector store file: claim it under a lease, parse, chunk, embed, store, finish.

Postgres decides what is to be done: a file is work while it is `in_progress` with no live
lease. Kafka orders are wake-ups; a pull loop claims whatever is waiting, so several indexers
share the files of one store (whose orders all land on one partition) and a crashed indexer's
files are taken over when its lease runs out. Chunks are written under the lease and resumed
after a crash; a file is completed once, by one transaction that checks the lease.
"""

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg
import openai

from services.core import db, metrics
from services.core.blobs import BlobStore, read_all
from services.core.embeddings import Embedder
from services.core.store import vector_store_files
from services.file_indexer import chunking, parsing, writes
from services.file_indexer.settings import Settings
from services.file_indexer.writes import Claim

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[Exception], ...] = (*db.ERRORS, openai.APIError)
"""Failures worth another attempt: the database, the blob store or the embeddings endpoint."""


class Indexer:
    """Claims files and indexes each in its own task, at most `concurrency` at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        blobs: BlobStore,
        embedder: Embedder,
        settings: Settings,
        owner: str,
    ):
        self._pool = pool
        self._blobs = blobs
        self._embedder = embedder
        self._settings = settings
        self._owner = owner
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost: set[uuid.UUID] = set()
        self._wake = asyncio.Event()

    @property
    def free(self) -> int:
        """How many more files this indexer can take now."""
        return self._settings.concurrency - len(self._tasks)

    def wake(self) -> None:
        """New work may be waiting (an order arrived)."""
        self._wake.set()

    async def pull(self) -> None:
        """Claim waiting files while there is room; wait for a wake-up or the interval."""
        while True:
            self._wake.clear()
            if self.free > 0:
                try:
                    async with self._pool.acquire() as conn:
                        claims = await writes.claim(
                            conn, self.free, self._owner, self._settings.lease_seconds
                        )
                except db.ERRORS as exc:
                    log.warning("claiming files failed: %s", exc)
                    claims = []
                for claim in claims:
                    self._start(claim)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval_seconds)

    def _start(self, claim: Claim) -> None:
        task = asyncio.create_task(self._index(claim), name=f"index {claim.file_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[None]") -> None:
        self._tasks.discard(task)
        self._wake.set()  # room for the next file

    async def shutdown(self, grace: float) -> None:
        """Let files in flight finish for `grace` seconds, then hand the rest back."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _index(self, claim: Claim) -> None:
        work = asyncio.current_task()
        heartbeat = asyncio.create_task(self._heartbeat(claim, work))
        try:
            await self._attempt(claim)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, claim: Claim, work: "asyncio.Task[Any] | None") -> None:
        """Renew the lease while the file is worked on; stop the work if the lease is gone."""
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._pool.acquire() as conn:
                    held = await writes.renew(conn, claim, self._settings.lease_seconds)
            except db.ERRORS as exc:
                log.warning("renewing the lease of %s: %s", claim.file_id, exc)
                continue
            if not held and work is not None:
                log.info("file %s: lease gone (cancelled, deleted or taken over)", claim.file_id)
                self._lost.add(claim.token)
                work.cancel()
                return

    async def _attempt(self, claim: Claim) -> None:
        try:
            await self._work(claim)
        except parsing.ParseError as exc:
            code = (
                "unsupported_file" if isinstance(exc, parsing.UnsupportedFile) else "invalid_file"
            )
            await self._fail(claim, code, exc.message)
        except writes.LeaseLost:
            log.info("file %s in %s: lease lost or file gone; stopping", claim.file_id,
                     claim.vector_store_id)  # fmt: skip
        except asyncio.CancelledError:
            if claim.token in self._lost:
                self._lost.discard(claim.token)
                return  # not ours any more: nothing to hand back
            await asyncio.shield(self._release(claim))
            raise
        except TRANSIENT as exc:
            await self._retry_or_fail(claim, exc)
        except Exception as exc:
            # The boundary around one file: whatever goes wrong is recorded on the file (a
            # server_error after the last attempt) and the indexer goes on with the next.
            log.exception("indexing %s failed", claim.file_id)
            await self._retry_or_fail(claim, exc)

    async def _work(self, claim: Claim) -> None:
        async with self._pool.acquire() as conn:
            source = await writes.source(conn, claim)
        data = await read_all(self._blobs, source.blob_key)
        text = await asyncio.to_thread(parsing.parse, data, source.filename)
        size = claim.chunking
        pieces = await asyncio.to_thread(
            chunking.chunk, text, size.max_chunk_size_tokens, size.chunk_overlap_tokens
        )
        async with self._pool.acquire() as conn:
            done = await writes.stored_count(conn, claim)
        batch = self._settings.embed_batch
        for start in range(done - done % batch, len(pieces), batch):
            texts = pieces[start : start + batch]
            vectors = await self._embedder.passages(texts)
            async with self._pool.acquire() as conn, conn.transaction():
                await writes.store_chunks(
                    conn, claim, start, texts, vectors, self._settings.lease_seconds
                )
        async with self._pool.acquire() as conn, conn.transaction():
            finished = await writes.complete(conn, claim, text)
            await vector_store_files.emit(conn, "completed", finished, None)
        metrics.FILES_INDEXED.labels("completed").inc()
        log.info("indexed %s into %s: %d chunks (%s)", claim.file_id, claim.vector_store_id,
                 len(pieces), self._owner)  # fmt: skip

    async def _fail(self, claim: Claim, code: str, message: str) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                failed = await writes.fail(conn, claim, code, message)
                await vector_store_files.emit(conn, "failed", failed, None)
            metrics.FILES_INDEXED.labels("failed").inc()
            log.info("file %s failed: %s: %s", claim.file_id, code, message)
        except writes.LeaseLost:
            pass
        except db.ERRORS as exc:
            log.warning("recording the failure of %s: %s", claim.file_id, exc)

    async def _retry_or_fail(self, claim: Claim, exc: BaseException) -> None:
        if claim.attempts >= self._settings.max_attempts:
            message = f"Indexing failed after {claim.attempts} attempts: {exc}"
            await self._fail(claim, "server_error", message[:1000])
            return
        log.warning("indexing %s failed (attempt %d): %s; retrying", claim.file_id,
                    claim.attempts, exc)  # fmt: skip
        await self._release(claim, delay=self._settings.retry_delay_seconds)

    async def _release(self, claim: Claim, delay: float = 0.0) -> None:
        try:
            async with self._pool.acquire() as conn:
                await writes.release(conn, claim, delay)
        except db.ERRORS as exc:
            log.warning("releasing %s: %s (its lease will run out)", claim.file_id, exc)
