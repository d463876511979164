"""The engine: claims runs, drives each in its own task under a lease, and sweeps Postgres."""

import asyncio
import contextlib
import dataclasses
import logging
import time

import asyncpg

from schemas.runs import ACTIVE_STATUSES
from services.core import cancel, db, logs, metrics, outbox, runstate, tracing
from services.core.model import NOT_CONFIGURED, Completion, ModelClient, ModelFailure
from services.core.runstate import Claim, Lease, LeaseLost
from services.core.store import runs
from services.run_poller import knowledge, plain_end, records
from services.run_poller.context import NoRoom, prepare, timeline
from services.run_poller.reply import ReplyWriter
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
        self._stop_requested: set[str] = set()
        self._writers: dict[str, ReplyWriter] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._offering: set[str] = set()
        self._offers: set[asyncio.Task[None]] = set()

    async def offer(self, run_id: str) -> bool:
        """Claim the run if it is claimable and start driving it; True if claimed."""
        if run_id in self._tasks:
            return False
        async with self._pool.acquire() as conn:  # one statement: no transaction
            claim = await runstate.claim(
                conn, run_id, owner=self._owner, lease_seconds=self._settings.lease_seconds
            )
            if claim is None:
                return False
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
                list(ACTIVE_STATUSES),
            )
            for row in overdue:
                try:
                    async with conn.transaction():
                        await records.lock_thread(conn, row["thread_id"])
                        await self._expire_in(conn, row["id"], row["thread_id"])
                except Exception:  # one bad run must not stop the sweep of the others
                    log.exception("expiring run %s failed", row["id"])
            orphans = await conn.fetch(
                "SELECT id, thread_id, coalesce(cause_event_id, id) AS cause FROM runs"
                " WHERE status = 'cancelling'"
                " AND (lease_expires_at IS NULL OR lease_expires_at < now())"
            )
            for row in orphans:
                try:
                    async with conn.transaction():
                        await records.lock_thread(conn, row["thread_id"])
                        with contextlib.suppress(LeaseLost):
                            await cancel.finish(
                                conn, row["id"], row["thread_id"], row["cause"],
                                expires_seconds=self._settings.run_expires_seconds,
                            )  # fmt: skip
                except Exception:
                    log.exception("finishing the cancel of run %s failed", row["id"])
            stale = await conn.fetch(records.CLAIMABLE, float(self._settings.wakeup_grace_seconds))
        for row in stale:
            try:
                if await self.offer(row["id"]):
                    log.info("re-driving run %s", row["id"])
            except Exception:
                log.exception("re-driving run %s failed", row["id"])

    async def shutdown(self, grace: float) -> None:
        """Let runs in flight finish for `grace` seconds, then stop the rest and hand them back.

        A stopped run's lease is released and a wake-up queued in one transaction, so another
        run-poller takes it over at once instead of when the lease would have expired.
        """
        for offer in self._offers:
            offer.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)
        for task in list(self._tasks.values()):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        # Shielded: a shutdown that is itself being cancelled still hands the runs back.
        await asyncio.shield(self._hand_back())

    async def _hand_back(self) -> None:
        """Release this process's leases and queue wake-ups, in one transaction."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                handed = await conn.fetch(
                    "UPDATE runs SET lease_owner = NULL, lease_token = NULL,"
                    " lease_expires_at = now(), updated_at = now()"
                    " WHERE lease_owner = $1 AND status = ANY($2::text[])"
                    " RETURNING id, thread_id",
                    self._owner,
                    list(ACTIVE_STATUSES),
                )
                for row in handed:
                    await runs.wake(conn, row["id"])
        except Exception:  # the leases then expire as after a crash
            log.exception("could not hand runs back at shutdown (their leases expire)")
            return
        if handed:
            log.info("handed %d run(s) back: %s", len(handed), ", ".join(r["id"] for r in handed))

    def stop(self, run_id: str) -> None:
        """A cancel was requested: stop driving the run (the model stream is closed)."""
        task = self._tasks.get(run_id)
        if task is not None and run_id not in self._stop_requested:
            self._stop_requested.add(run_id)
            task.cancel()

    async def listen(self) -> None:
        """Claim runs as soon as they are queued or woken, and stop runs as soon as the API or
        run-starter asks (Postgres NOTIFY on `threadbus_runs` and `threadbus_cancel`).

        On every (re)connect it first offers every run that is claimable now, so a wake-up
        sent while it was not listening waits for nothing.
        """

        async def catch_up(conn: asyncpg.Connection) -> None:
            for row in await conn.fetch(records.CLAIMABLE, 0.0):
                self.woken(row["id"])

        channels = {cancel.CHANNEL: self.stop, runs.WAKE_CHANNEL: self.woken}
        await db.listen(
            self._settings.database_url, channels, connected=catch_up, role="run-poller-wakes"
        )

    def woken(self, run_id: str) -> None:
        """A wake-up arrived: offer the run in a task of its own (one per run at a time)."""
        if run_id in self._tasks or run_id in self._offering:
            return
        self._offering.add(run_id)
        task = asyncio.create_task(self._offer_woken(run_id), name=f"offer {run_id}")
        self._offers.add(task)
        task.add_done_callback(self._offers.discard)

    async def _offer_woken(self, run_id: str) -> None:
        try:
            await self.offer(run_id)
        except db.ERRORS as exc:
            log.warning("run %s: claim failed: %s; the sweeper will re-drive it", run_id, exc)
        except Exception:
            log.exception("run %s: claim failed; the sweeper will re-drive it", run_id)
        finally:
            self._offering.discard(run_id)

    async def _drive(self, claim: Claim) -> None:
        lease = claim.lease
        logs.bind(run_id=lease.run_id, thread_id=lease.thread_id)  # this task's lines
        heartbeat = asyncio.create_task(self._heartbeat(lease))
        try:
            if self._slots.locked():  # its turn waits: the messages the claim read may be old
                claim = dataclasses.replace(claim, thread_messages=None)
            async with self._slots:
                with tracing.span("run turn", parent=claim.trace, attributes={
                    "threadbus.run_id": lease.run_id, "threadbus.thread_id": lease.thread_id,
                }):  # fmt: skip
                    await self._turn(claim)
        except asyncio.CancelledError:
            if lease.run_id not in self._stop_requested:
                raise
            await asyncio.shield(self._finish_cancel(lease))
        except LeaseLost:
            if await self._status_held(lease) == "cancelling":
                self._stop_requested.add(lease.run_id)  # a late NOTIFY must not cancel us now
                await asyncio.shield(self._finish_cancel(lease))
            else:
                log.info("run %s: lease lost, leaving it to its new owner", lease.run_id)
        except db.ERRORS as exc:
            # Postgres closes a connection frozen inside a transaction: the process wakes to
            # that error after another run-poller took the run over.
            with contextlib.suppress(*db.ERRORS):
                if await self._status_held(lease) is None:
                    log.info("run %s: lease lost (%s), it has a new owner", lease.run_id, exc)
                    return
            log.warning("run %s: %s; the sweeper will re-drive it", lease.run_id, exc)
        finally:
            heartbeat.cancel()
            self._stop_requested.discard(lease.run_id)
            if (writer := self._writers.pop(lease.run_id, None)) is not None:
                await writer.halt()

    async def _heartbeat(self, lease: Lease) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._pool.acquire() as conn:
                    status = await runstate.renew(conn, lease, self._settings.lease_seconds)
            except db.ERRORS as exc:
                log.warning("run %s: lease renewal failed: %s", lease.run_id, exc)
                continue
            if status == "cancelling":
                self.stop(lease.run_id)
            elif status is None:
                # Taken over (this process stalled past its lease) or ended: stop writing.
                log.info("run %s: lease lost, leaving it to its new owner", lease.run_id)
                task = self._tasks.get(lease.run_id)
                if task is not None:
                    task.cancel()
                return

    async def _status_held(self, lease: Lease) -> str | None:
        async with self._pool.acquire() as conn:
            return await runstate.status_held(conn, lease)

    async def _finish_cancel(self, lease: Lease) -> None:
        """The run was being cancelled while we drove it: nothing more is written but that."""
        writer = self._writers.get(lease.run_id)
        if writer is not None:
            await writer.halt()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await records.hold(conn, lease, status="cancelling")
                if writer is not None:
                    await writer.abandon_in(conn, "run_cancelled")
                await cancel.finish(
                    conn, lease.run_id, lease.thread_id, lease.cause,
                    expires_seconds=self._settings.run_expires_seconds, lease=lease,
                )  # fmt: skip
            log.info("run %s cancelled", lease.run_id)
        except LeaseLost:
            log.info("run %s: cancel finished elsewhere", lease.run_id)

    async def _turn(self, claim: Claim) -> None:
        """One model turn: resume, ask the model, record what it said, decide what is next."""
        lease = claim.lease
        if not self._model.configured:
            await self._fail(lease, ModelFailure("server_error", NOT_CONFIGURED))
            return
        # The claim read the run and its steps (every later write is fenced by the lease); a
        # step left open (a tool step whose results came in, or a reply a crashed attempt
        # opened) is resumed under the locks.
        run, steps_taken, spent = claim.run, claim.steps_taken, claim.spent
        async with self._pool.acquire() as conn:
            existing = None
            if claim.open_step:
                async with conn.transaction():
                    run = await records.hold(conn, lease)
                    waiting = await records.resume(conn, run, lease.cause)
                    if waiting:
                        await records.dispatch(conn, waiting)
                        await records.park(conn, lease, self._settings.tool_wait_seconds)
                        return
                    existing = await records.open_reply(conn, run)
            items = await timeline(conn, run.thread_id, claim.tool_turns or claim.open_step,
                                   claim.thread_messages)  # fmt: skip
        if any(tool.type == "file_search" for tool in run.tools):
            problem = await knowledge.wait_until_searchable(
                self._pool, run, self._settings.file_search_wait_seconds
            )
            if problem is not None:
                await self._fail(lease, ModelFailure("server_error", problem))
                return
        writer = ReplyWriter(self._pool, lease, run, existing)
        self._writers[run.id] = writer
        if steps_taken >= self._settings.max_steps:
            limit = self._settings.max_steps
            await self._fail(lease, ModelFailure("server_error", f"The run took {limit} steps."))
            return
        completion_left = None
        if run.max_completion_tokens is not None:
            completion_left = run.max_completion_tokens - spent["completion_tokens"]
            if completion_left <= 0:
                await self._end_incomplete(lease, "max_completion_tokens", spent)
                return
        budget = self._settings.context_tokens
        if run.max_prompt_tokens is not None:
            budget = min(budget, run.max_prompt_tokens - spent["prompt_tokens"])
        try:
            request = await prepare(run, items, budget=budget)
        except NoRoom as exc:
            if run.max_prompt_tokens is not None:
                await self._end_incomplete(lease, "max_prompt_tokens", spent)
            else:
                await self._fail(
                    lease, ModelFailure("invalid_prompt", f"The prompt is too long: {exc}.")
                )
            return
        if completion_left is not None:
            request[self._settings.model_max_tokens_param] = completion_left
        # The whole call, not each read, is bounded by the run's expiry: a model that keeps
        # streaming cannot hold the run (and its thread) past expires_at.
        left = None if run.expires_at is None else max(0.0, run.expires_at - time.time())
        deadline = asyncio.timeout(left)
        began = time.perf_counter()
        try:
            async with deadline:
                completion = await self._model.complete(request, on_delta=writer.on_text)
        except ModelFailure as failure:
            metrics.RUN_PHASE.labels("model").observe(time.perf_counter() - began)
            await self._fail(lease, failure, writer)
            return
        except TimeoutError:
            if not deadline.expired():
                raise
            await self._expire(lease, writer)
            return
        metrics.RUN_PHASE.labels("model").observe(time.perf_counter() - began)
        cut_off = completion_left is not None and completion.finish_reason == "length"
        await self._record(lease, completion, writer, cut_off=cut_off)

    async def _expire(self, lease: Lease, writer: ReplyWriter) -> None:
        """The run reached expires_at while the model answered: expired, its reply cut short
        (`incomplete`, with the text written so far)."""
        await writer.halt()  # as the deadline stopped the stream, it stops a write in flight
        async with self._pool.acquire() as conn, conn.transaction():
            await records.lock_thread(conn, lease.thread_id)
            await writer.abandon_in(conn, "run_expired")
            await self._expire_in(conn, lease.run_id, lease.thread_id)

    async def _expire_in(self, conn: asyncpg.Connection, run_id: str, thread_id: str) -> None:
        """Expire the run (thread locked by the caller) and start the thread's next run."""
        if await records.expire(conn, run_id, thread_id):
            log.info("run %s expired", run_id)
            await runs.start_pending(conn, thread_id, self._settings.run_expires_seconds)

    async def _record(
        self, lease: Lease, completion: Completion, writer: ReplyWriter, *, cut_off: bool
    ) -> None:
        usage = records.usage_of(completion)
        calls = [] if cut_off else records.tool_calls_of(completion)
        await writer.settle()  # a fast model's whole reply is written here, in one transaction
        content = None if calls or cut_off else writer.plain(completion.text)
        if content is not None:  # one statement, unless the thread has a run to start
            async with self._pool.acquire() as conn:
                if await plain_end.finish(conn, lease, usage, content, writer.unsent):
                    return
        async with self._pool.acquire() as conn, conn.transaction():
            if not calls:  # the run ends: its status, usage and lock in the first statement
                run, pending = await records.conclude(conn, lease, usage, cut_off=cut_off)
                reason = "max_tokens" if cut_off else None
                await writer.finish_in(conn, completion.text, usage, incomplete_reason=reason)
                await outbox.emit(conn, f"thread.run.{run.status}", run.thread_id, run, lease.cause)
                if pending:  # the thread's flag, read under its lock by the statement above
                    expires = self._settings.run_expires_seconds
                    await runs.start_pending(conn, run.thread_id, expires)
                return
            run = await records.hold_and_spend(conn, lease, usage)
            if completion.text:  # a turn that also called tools counts its tokens on the tool step
                await writer.finish_in(conn, completion.text, records.NO_USAGE)
            if not run.parallel_tool_calls:
                calls = calls[:1]
            _, rows = await records.write_tool_step(conn, run, calls, usage, lease.cause)
            await records.dispatch(conn, [r for r in rows if r.handler == "server"])
            client = [r for r in rows if r.handler == "client"]
            if client:
                await records.require_action(conn, lease, client, lease.cause)
            else:
                await records.park(conn, lease, self._settings.tool_wait_seconds)

    async def _end_incomplete(self, lease: Lease, reason: str, spent: dict[str, int]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            run = await records.hold(conn, lease)
            await records.end_incomplete(conn, lease, reason, spent)
            await runs.start_pending(conn, run.thread_id, self._settings.run_expires_seconds)
        log.info("run %s incomplete: %s", lease.run_id, reason)

    async def _fail(
        self, lease: Lease, failure: ModelFailure, writer: ReplyWriter | None = None
    ) -> None:
        if writer is not None:
            await writer.settle()
        async with self._pool.acquire() as conn, conn.transaction():
            run = await records.hold(conn, lease)
            if writer is not None:
                await writer.abandon_in(conn, "run_failed")
            await records.fail(conn, lease, run.thread_id, failure)
            await runs.start_pending(conn, run.thread_id, self._settings.run_expires_seconds)
        log.info("run %s failed: %s", lease.run_id, failure.message)
