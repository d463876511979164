"""The engine: claims runs, drives each in its own task under a lease, and sweeps Postgres."""

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from schemas.requests import RunOptions
from schemas.runs import Run, RunStep
from schemas.threads import Message
from services.core import outbox, runstate
from services.core.errors import NotFound
from services.core.ids import new_id
from services.core.model import NOT_CONFIGURED, Completion, ModelClient, ModelFailure
from services.core.runstate import Claim, Lease, LeaseLost
from services.core.store import assistants, messages, runs, steps
from services.run_poller.context import chat_request
from services.run_poller.settings import Settings

log = logging.getLogger(__name__)


class Engine:
    """Owns the tasks that drive runs; every write is fenced by the run's lease token."""

    def __init__(self, pool: asyncpg.Pool, model: ModelClient, settings: Settings, owner: str):
        self._pool = pool
        self._model = model
        self._settings = settings
        self._owner = owner
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)

    @property
    def active(self) -> int:
        """How many runs this process is driving."""
        return len(self._tasks)

    async def offer(self, run_id: str) -> bool:
        """Claim the run if it is claimable and start driving it; True if claimed."""
        if run_id in self._tasks:
            return False
        async with self._pool.acquire() as conn, conn.transaction():
            claim = await runstate.claim(
                conn, run_id, owner=self._owner, lease_seconds=self._settings.lease_seconds
            )
            if claim is None:
                return False
            if claim.previous_status == "queued":
                await outbox.emit(
                    conn,
                    "thread.run.in_progress",
                    claim.run.thread_id,
                    claim.run,
                    claim.lease.cause,
                )
        task = asyncio.create_task(self._drive(claim), name=f"run {run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))
        return True

    async def sweep(self) -> None:
        """Expire overdue runs, then re-drive runs whose lease expired or whose wake-up was lost."""
        async with self._pool.acquire() as conn:
            overdue = await conn.fetch(
                "SELECT id, thread_id FROM runs WHERE status = ANY($1::text[])"
                " AND expires_at <= epoch_now()"
                " AND (lease_expires_at IS NULL OR lease_expires_at < now())",
                ["queued", "in_progress", "requires_action", "cancelling"],
            )
            for row in overdue:
                await self._expire(conn, row["id"], row["thread_id"])
            stale = await conn.fetch(
                "SELECT id FROM runs WHERE (status = 'queued'"
                " AND updated_at < now() - make_interval(secs => $1))"
                " OR (status = 'in_progress' AND lease_expires_at < now())"
                " ORDER BY seq LIMIT 100",
                float(self._settings.wakeup_grace_seconds),
            )
        for row in stale:
            if await self.offer(row["id"]):
                log.info("re-driving run %s", row["id"])

    async def shutdown(self, grace: float) -> None:
        """Let runs in flight finish for `grace` seconds, then cancel the rest.

        A cancelled run keeps its lease until it expires; another run-poller then takes it over.
        """
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)
        for task in list(self._tasks.values()):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _drive(self, claim: Claim) -> None:
        lease = claim.lease
        heartbeat = asyncio.create_task(self._heartbeat(lease, asyncio.current_task()))
        try:
            async with self._slots:
                await self._turn(lease)
        except LeaseLost:
            log.info("run %s: lease lost, leaving it to its new owner", lease.run_id)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("run %s: %s; the sweeper will re-drive it", lease.run_id, exc)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, lease: Lease, driver: asyncio.Task[Any] | None) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._pool.acquire() as conn:
                    alive = await runstate.renew(conn, lease, self._settings.lease_seconds)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("run %s: lease renewal failed: %s", lease.run_id, exc)
                continue
            if not alive and driver is not None:
                driver.cancel()
                return

    async def _turn(self, lease: Lease) -> None:
        if not self._model.configured:
            await self._fail(lease, None, None, ModelFailure("server_error", NOT_CONFIGURED))
            return
        async with self._pool.acquire() as conn, conn.transaction():
            run = await runstate.hold(conn, lease)
            step, reply = await self._open_reply(conn, run, lease.cause)
            history = await messages.history(conn, run.thread_id)
        try:
            completion = await self._model.complete(chat_request(run, history, reply_id=reply.id))
        except ModelFailure as failure:
            await self._fail(lease, step, reply, failure)
            return
        await self._complete(lease, step, reply, completion)

    async def _open_reply(
        self, conn: asyncpg.Connection, run: Run, cause: str
    ) -> tuple[RunStep, Message]:
        """The message_creation step and its reply, reused when a re-driven run resumes."""
        step = await steps.current(conn, run.id)
        if step is not None and step.step_details.type == "message_creation":
            message_id = step.step_details.message_creation.message_id
            return step, await messages.get(conn, run.thread_id, message_id)
        message_id = new_id("msg")
        step = await steps.open_step(
            conn,
            run,
            "message_creation",
            {"type": "message_creation", "message_creation": {"message_id": message_id}},
        )
        reply = await messages.open_assistant_message(conn, run, message_id)
        for type_, data in (
            ("thread.run.step.created", step),
            ("thread.run.step.in_progress", step),
            ("thread.message.created", reply),
            ("thread.message.in_progress", reply),
        ):
            await outbox.emit(conn, type_, run.thread_id, data, cause)
        return step, reply

    async def _complete(
        self, lease: Lease, step: RunStep, reply: Message, completion: Completion
    ) -> None:
        usage = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        }
        content = [{"type": "text", "text": {"value": completion.text, "annotations": []}}]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE", step.thread_id)
            await runstate.hold(conn, lease)
            message = await messages.finish(conn, reply.id, content=content)
            closed = await steps.close(conn, step.id, "completed", usage=usage)
            run = await runstate.transition(
                conn, lease.run_id, "completed", lease=lease, fields={"usage": usage}
            )
            if run is None:
                raise LeaseLost(lease.run_id)
            for type_, data in (
                ("thread.message.completed", message),
                ("thread.run.step.completed", closed),
                ("thread.run.completed", run),
            ):
                await outbox.emit(conn, type_, run.thread_id, data, lease.cause)
            await self._start_pending(conn, run.thread_id)

    async def _fail(
        self, lease: Lease, step: RunStep | None, reply: Message | None, failure: ModelFailure
    ) -> None:
        error = {"code": failure.code, "message": failure.message}
        async with self._pool.acquire() as conn, conn.transaction():
            thread_id = await conn.fetchval(
                "SELECT thread_id FROM runs WHERE id = $1", lease.run_id
            )
            await conn.execute("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE", thread_id)
            await runstate.hold(conn, lease)
            if reply is not None:
                message = await messages.finish(
                    conn, reply.id, content=[], incomplete_reason="run_failed"
                )
                await outbox.emit(
                    conn, "thread.message.incomplete", thread_id, message, lease.cause
                )
            if step is not None:
                step_error = {
                    **error,
                    "code": "rate_limit_exceeded"
                    if failure.code == "rate_limit_exceeded"
                    else "server_error",
                }
                closed = await steps.close(conn, step.id, "failed", last_error=step_error)
                await outbox.emit(conn, "thread.run.step.failed", thread_id, closed, lease.cause)
            run = await runstate.transition(
                conn, lease.run_id, "failed", lease=lease, fields={"last_error": error}
            )
            if run is None:
                raise LeaseLost(lease.run_id)
            await outbox.emit(conn, "thread.run.failed", thread_id, run, lease.cause)
            await self._start_pending(conn, thread_id)
        log.info("run %s failed: %s", lease.run_id, failure.message)

    async def _expire(self, conn: asyncpg.Connection, run_id: str, thread_id: str) -> None:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE", thread_id)
            run = await runstate.transition(conn, run_id, "expired")
            if run is None:
                return
            step = await steps.current(conn, run_id)
            if step is not None:
                closed = await steps.close(conn, step.id, "expired")
                await outbox.emit(conn, "thread.run.step.expired", thread_id, closed, run_id)
            await outbox.emit(conn, "thread.run.expired", thread_id, run, run_id)
            await self._start_pending(conn, thread_id)
        log.info("run %s expired", run_id)

    async def _start_pending(self, conn: asyncpg.Connection, thread_id: str) -> None:
        """Start the run that inbound messages folded in while this one was active."""
        pending = await runs.take_pending(conn, thread_id)
        if pending is None:
            return
        try:
            assistant = await assistants.get(conn, pending["assistant_id"])
        except NotFound:
            log.warning("pending run for %s dropped: its assistant is gone", thread_id)
            return
        await runs.create(
            conn,
            thread_id,
            assistant,
            RunOptions.model_validate(pending["options"]),
            expires_seconds=self._settings.run_expires_seconds,
            cause=pending["cause_event_id"],
        )
