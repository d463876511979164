"""Streaming a reply: the message is opened at the model's first token, deltas are coalesced."""

import asyncio
import time
from typing import Any

import asyncpg

from schemas.runs import Run, RunStep
from schemas.threads import Message
from services.core import outbox
from services.core.runstate import Lease
from services.core.store import messages, steps
from services.run_poller import citations, records

FLUSH_CHARS = 48
FLUSH_SECONDS = 0.05
"""Coalescing: the first fragment leaves at once; after it, a delta event leaves when 48
characters are waiting or 50 ms have passed since the last one (checked as tokens arrive),
and always before the message completes."""


def text_content(
    text: str, annotations: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One text content part."""
    return [{"type": "text", "text": {"value": text, "annotations": annotations or []}}]


class ReplyWriter:
    """Opens the run's reply when the first token arrives and streams it as delta events.

    Writes happen in a task beside the model's stream (one at a time), which begins on the
    event loop's next turn: a stream that is already whole by then (a fast model) is written by
    the turn's final transaction alone, opening, text and completion in one. `settle` before
    that transaction; `halt` when the run stops.

    On a re-driven run the step and message that an earlier attempt opened are reused.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        lease: Lease,
        run: Run,
        existing: tuple[RunStep, Message | None] | None,
    ):
        self._pool = pool
        self._lease = lease
        self._run = run
        self.step: RunStep | None = existing[0] if existing else None
        self.message: Message | None = existing[1] if existing else None
        self.text = ""
        self._images: list[dict[str, Any]] = [
            p.model_dump(mode="json") for p in (self.message.content if self.message else [])
            if p.type == "image_file"
        ]  # fmt: skip
        self._pending = ""
        self._last_flush = 0.0  # the first fragment leaves at once: time to first token counts
        self._flusher: asyncio.Task[None] | None = None
        self._settled = False

    @property
    def opened(self) -> bool:
        """The reply's step exists (its message too, unless somebody deleted it)."""
        return self.step is not None

    async def on_text(self, fragment: str) -> None:
        """A fragment of the model's answer: the first one opens the reply, later ones leave
        as coalesced deltas (raises what a write beside the stream failed with)."""
        self.text += fragment
        self._pending += fragment
        flusher = self._flusher
        if flusher is not None:
            if not flusher.done():
                return  # what it did not take waits for the next write
            self._flusher = None
            flusher.result()  # LeaseLost, a lost database: the turn stops here
        due = time.monotonic() - self._last_flush >= FLUSH_SECONDS
        if not self.opened or len(self._pending) >= FLUSH_CHARS or due:
            self._flusher = asyncio.create_task(self._write_soon(), name="reply write")

    async def _write_soon(self) -> None:
        """Open the reply and/or emit the waiting text, unless the turn's end came first."""
        await asyncio.sleep(0)  # the stream reads what it already received
        if self._settled:
            return  # the final transaction writes it all
        async with self._pool.acquire() as conn, conn.transaction():
            await records.hold(conn, self._lease)  # thread, then run: the one lock order
            await self.open_in(conn)
            await self.flush_in(conn)

    async def settle(self) -> None:
        """The turn is ending: a write not yet begun is left to the caller's transaction, one
        begun is waited for (its failure raised), so events keep their order."""
        flusher = self._settle_now()
        if flusher is not None:
            await flusher

    async def halt(self) -> None:
        """The run stops (cancelled, lease lost): a write in flight is stopped (rolled back)."""
        flusher = self._settle_now()
        if flusher is None:
            return
        flusher.cancel()
        await asyncio.wait([flusher])
        if not flusher.cancelled():
            flusher.exception()  # retrieved: the run's own outcome is what gets reported

    def _settle_now(self) -> "asyncio.Task[None] | None":
        """No write begins from now on; returns the one in flight, if any."""
        self._settled = True
        flusher, self._flusher = self._flusher, None
        return flusher

    async def open_in(self, conn: asyncpg.Connection) -> None:
        """Write the step and the empty message, with their four events."""
        if self.opened:
            return
        await self._lead_images(conn)
        self.step, self.message = await messages.open_reply(conn, self._run, self._images)
        await self._emit_opened(conn, self.step, self.message)

    async def _lead_images(self, conn: asyncpg.Connection) -> None:
        """Find the images the reply leads with."""
        # The images the code displayed lead the reply, as the hosted tool put them.
        if self._offers("code_interpreter"):
            self._images = [
                {"type": "image_file", "image_file": {"file_id": file_id}}
                for file_id in await citations.images_since_last_reply(conn, self._run.id)
            ]

    async def _emit_opened(self, conn: asyncpg.Connection, step: RunStep, message: Message) -> None:
        for type_, data in (
            ("thread.run.step.created", step),
            ("thread.run.step.in_progress", step),
            ("thread.message.created", message),
            ("thread.message.in_progress", message),
        ):
            await outbox.emit(conn, type_, self._run.thread_id, data, self._lease.cause)

    def _offers(self, tool: str) -> bool:
        """The run offers that tool to the model (else it made no such call: no query)."""
        return any(offered.type == tool for offered in self._run.tools)

    async def flush_in(self, conn: asyncpg.Connection) -> None:
        """Emit the waiting text as one `thread.message.delta`."""
        self._last_flush = time.monotonic()
        if not self._pending or self.message is None:
            return
        delta = {
            "id": self.message.id,
            "object": "thread.message.delta",
            "delta": {
                "content": [
                    {"index": len(self._images), "type": "text", "text": {"value": self._pending}}
                ]
            },
        }
        self._pending = ""
        await outbox.emit(
            conn, "thread.message.delta", self._run.thread_id, delta, self._lease.cause,
            run_id=self._run.id,
        )  # fmt: skip

    async def finish_in(
        self,
        conn: asyncpg.Connection,
        text: str,
        usage: dict[str, int],
        *,
        incomplete_reason: str | None = None,
    ) -> None:
        """Flush, then complete (or cut short) the message and complete its step.

        A reply not opened yet (a fast model) is written whole: its step and message are
        inserted finished, one statement instead of three, with the same events."""
        whole = not self.opened
        if whole:
            await self._lead_images(conn)
        cited = await self._cite(conn, text)
        content = self._images + text_content(text, cited)
        cause = self._lease.cause
        if whole:
            closed, done = self.step, self.message = await messages.open_reply(
                conn, self._run, content, finished_with=usage,
                incomplete_reason=incomplete_reason,
            )  # fmt: skip
            opened = messages.as_opened(done, len(self._images))
            await self._emit_opened(conn, steps.as_opened(closed), opened)
            await self.flush_in(conn)
        else:
            assert self.step is not None
            await self.flush_in(conn)
            done = None
            if self.message is not None:
                done = await messages.finish(
                    conn, self.message.id, content=content, incomplete_reason=incomplete_reason
                )
            # done is None: the reply was deleted while the run wrote it. The run goes on; its
            # text is not kept, and the step still completes (naming the deleted message).
            closed = await steps.close(conn, self.step.id, "completed", usage=usage)
        if done is not None:
            if cited:
                await self._emit_annotations(conn, cited)
            await outbox.emit(
                conn, f"thread.message.{done.status}", self._run.thread_id, done, cause
            )
        await outbox.emit(conn, "thread.run.step.completed", self._run.thread_id, closed, cause)

    def plain(self, text: str) -> list[dict[str, Any]] | None:
        """The content of a reply `plain_end` can write (not opened yet, nothing in it needs
        a query: no images the code displayed, no citations, no links to files the code
        wrote), after which the writer has nothing left to emit; None for any other reply."""
        if self.opened or self._offers("code_interpreter") or self._offers("file_search"):
            return None
        if citations.LINK_PREFIX in text:
            return None
        return text_content(text)

    @property
    def unsent(self) -> str:
        """The text no delta event carried yet."""
        return self._pending

    async def _cite(self, conn: asyncpg.Connection, text: str) -> list[dict[str, Any]]:
        """The reply's annotations: file citations, and links to files the code wrote."""
        results = []
        if self._offers("file_search"):
            results = await citations.results_of(conn, self._run.id)
        cited = citations.annotations(text, results)
        if citations.LINK_PREFIX in text:
            written = await citations.written_files(conn, self._run.thread_id)
            cited = sorted(
                cited + citations.file_paths(text, written), key=lambda a: a["start_index"]
            )
        return cited

    async def _emit_annotations(
        self, conn: asyncpg.Connection, cited: list[dict[str, Any]]
    ) -> None:
        """A delta that adds the reply's citations (indexed as the SDK accumulates them)."""
        assert self.message is not None
        text = {"annotations": [{"index": i, **a} for i, a in enumerate(cited)]}
        delta = {
            "id": self.message.id,
            "object": "thread.message.delta",
            "delta": {"content": [{"index": len(self._images), "type": "text", "text": text}]},
        }
        await outbox.emit(
            conn, "thread.message.delta", self._run.thread_id, delta, self._lease.cause,
            run_id=self._run.id,
        )  # fmt: skip

    async def abandon_in(self, conn: asyncpg.Connection, reason: str) -> None:
        """The run ends without this reply finishing: the message becomes `incomplete`, with
        the text so far (opened here when the model's text came faster than the first write)."""
        if not self.opened and self.text:
            await self.open_in(conn)
        if self.message is None:
            return
        await self.flush_in(conn)
        done = await messages.finish(
            conn,
            self.message.id,
            content=self._images + text_content(self.text),
            incomplete_reason=reason,
        )
        if done is not None:
            await outbox.emit(
                conn, "thread.message.incomplete", self._run.thread_id, done, self._lease.cause
            )
