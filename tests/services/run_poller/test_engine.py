"""The engine against real Postgres, in-process: failures, retries, and no model configured."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from schemas.requests import AssistantCreate, MessageCreate, RunOptions, ThreadCreate
from schemas.runs import Run
from services.core import db
from services.core.model import NOT_CONFIGURED, ModelClient
from services.core.store import assistants, messages, runs, threads
from services.run_poller.engine import Engine
from services.run_poller.settings import Settings
from tests.fakes.model_server import ScriptedModelServer
from tests.system import Infrastructure


@pytest.fixture(scope="module")
async def database_url(infra: Infrastructure) -> str:
    """A migrated database of its own: the suite's running run-pollers, woken by NOTIFY the
    moment a run is queued, would otherwise claim these runs before the engine under test."""
    return await infra.new_database("engine")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, size=4)
    yield pool
    await pool.close()


def settings(infra: Infrastructure, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=infra.bootstrap,
        lease_seconds=5,
        model_retry_backoff_seconds=0.01,
        model_max_retries=2,
    )


async def queue_run(pool: asyncpg.Pool, text: str) -> Run:
    async with pool.acquire() as conn, conn.transaction():
        assistant = await assistants.create(conn, AssistantCreate(model="gpt-4o"))
        body = ThreadCreate(messages=[MessageCreate(role="user", content=text)])
        thread = await threads.create(conn, body)
        return await runs.create(conn, thread.id, assistant, RunOptions(), expires_seconds=600)


async def drive(pool: asyncpg.Pool, engine: Engine, run: Run) -> Run:
    assert await engine.offer(run.id)
    for _ in range(200):
        async with pool.acquire() as conn:
            current = await runs.get(conn, run.thread_id, run.id)
        if current.status not in ("queued", "in_progress"):
            return current
        await asyncio.sleep(0.05)
    raise TimeoutError(run.id)


async def test_without_a_model_endpoint_the_run_fails_saying_what_to_set(
    pool: asyncpg.Pool, infra: Infrastructure, database_url: str
) -> None:
    model = ModelClient(base_url=None, api_key=None)
    engine = Engine(pool, model, settings(infra, database_url), "test")
    run = await drive(pool, engine, await queue_run(pool, "hello?"))
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert run.last_error.message == NOT_CONFIGURED
    assert "OPENAI_BASE_URL" in run.last_error.message
    assert "OPENAI_API_KEY" in run.last_error.message
    assert run.failed_at is not None
    assert run.expires_at is None
    await model.close()


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "server_error"), (429, "rate_limit_exceeded"), (400, "invalid_prompt")],
)
async def test_a_failing_model_fails_the_run_after_bounded_retries(
    pool: asyncpg.Pool,
    infra: Infrastructure,
    database_url: str,
    model: ScriptedModelServer,
    status: int,
    code: str,
) -> None:
    model.script(f"fail-{status}", status=status)
    client = ModelClient(base_url=model.base_url, api_key="k", max_retries=2, backoff=0.01)
    engine = Engine(pool, client, settings(infra, database_url), "test")
    run = await drive(pool, engine, await queue_run(pool, f"fail-{status}"))
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == code
    tries = [r for r in model.requests if f"fail-{status}" in str(r["messages"])]
    assert len(tries) == (1 if status == 400 else 3)
    # The model failed before it produced anything, so no step or reply was opened: a run
    # records a step once the model has said something (the first version opened an empty
    # reply before asking, which left an empty `incomplete` message in the thread).
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM run_steps WHERE run_id = $1", run.id) == 0
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE run_id = $1", run.id) == 0
    await client.close()


async def test_a_passing_rate_limit_is_retried(
    pool: asyncpg.Pool, infra: Infrastructure, database_url: str, model: ScriptedModelServer
) -> None:
    model.script("busy", status=429, error_times=2)
    model.script("busy", reply="Made it.")
    client = ModelClient(base_url=model.base_url, api_key="k", max_retries=3, backoff=0.01)
    engine = Engine(pool, client, settings(infra, database_url), "test")
    run = await drive(pool, engine, await queue_run(pool, "busy"))
    assert run.status == "completed"
    async with pool.acquire() as conn:
        text = await conn.fetchval(
            "SELECT content->0->'text'->>'value' FROM messages WHERE run_id = $1", run.id
        )
    assert text == "Made it."
    await client.close()


async def test_a_claimed_run_is_not_claimed_twice(
    pool: asyncpg.Pool, infra: Infrastructure, database_url: str, model: ScriptedModelServer
) -> None:
    model.script("twice", reply="once", delay_s=0.5)
    client = ModelClient(base_url=model.base_url, api_key="k")
    first = Engine(pool, client, settings(infra, database_url), "first")
    second = Engine(pool, client, settings(infra, database_url), "second")
    run = await queue_run(pool, "twice")
    assert await first.offer(run.id)
    assert not await second.offer(run.id)
    await first.shutdown(grace=10)
    async with pool.acquire() as conn:
        done = await runs.get(conn, run.thread_id, run.id)
        replies = await conn.fetchval("SELECT count(*) FROM messages WHERE run_id = $1", run.id)
    assert done.status == "completed"
    assert replies == 1
    await client.close()


async def test_a_turn_that_waited_for_a_slot_reads_its_messages_again(
    pool: asyncpg.Pool, infra: Infrastructure, database_url: str, model: ScriptedModelServer
) -> None:
    # The claim reads the thread's messages; a run claimed while every slot is busy waits for
    # one, and a message deleted meanwhile must not reach the model.
    model.script("hold the slot", reply="done", delay_s=3.0)
    client = ModelClient(base_url=model.base_url, api_key="k")
    engine = Engine(pool, client, settings(infra, database_url).model_copy(
        update={"max_concurrent_runs": 1}), "one-slot")  # fmt: skip
    holder = await queue_run(pool, "hold the slot")
    waiter = await queue_run(pool, "keep this")
    async with pool.acquire() as conn:
        await messages.create(
            conn, waiter.thread_id, MessageCreate(role="user", content="drop this")
        )
    assert await engine.offer(holder.id)
    # The holder's turn has the slot and waits on the model (3 s).
    await asyncio.to_thread(model.wait_for_request, "hold the slot", timeout=15)
    assert await engine.offer(waiter.id)  # claimed, and waiting for the slot
    async with pool.acquire() as conn:
        gone = await conn.execute(
            "DELETE FROM messages WHERE thread_id = $1 AND content->0->'text'->>'value' = $2",
            waiter.thread_id, "drop this",
        )  # fmt: skip
    assert gone == "DELETE 1"
    await engine.shutdown(grace=10)
    sent = [r for r in model.requests if "keep this" in str(r["messages"])]
    assert len(sent) == 1
    assert "drop this" not in str(sent[0]["messages"])
    await client.close()


async def test_a_message_folded_while_the_run_ended_starts_the_next_run(
    pool: asyncpg.Pool, infra: Infrastructure, database_url: str, model: ScriptedModelServer
) -> None:
    # The end of a run reads the thread's pending-run flag under the thread's lock, with no
    # statement of its own. An intake that holds the thread while the run ends, and folds a
    # message into the next run, commits after the end's statement began: the end must still
    # see the flag (a row locked FOR UPDATE is read at its latest version) and start that run.
    # No text in the answer: a reply write beside the stream (which locks the thread too)
    # would otherwise begin whenever the stream's chunks arrive in separate reads, and wait
    # on the lock in the end's place (seen once in CI under load).
    model.script("end while folded", reply="", delay_s=3.0)
    client = ModelClient(base_url=model.base_url, api_key="k")
    engine = Engine(pool, client, settings(infra, database_url), "fold-race")
    run = await queue_run(pool, "end while folded")
    assert await engine.offer(run.id)
    # The turn waits on the model (3 s): the thread is locked before the run can end.
    await asyncio.to_thread(model.wait_for_request, "end while folded", timeout=15)
    intake = await pool.acquire()
    folding = intake.transaction()
    await folding.start()
    try:
        await intake.execute("SELECT 1 FROM threads WHERE id = $1 FOR UPDATE", run.thread_id)

        async def blocked_ending() -> bool:
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'WITH t AS MATERIALIZED%UPDATE runs r SET status%'"
            )
            return bool(waiting)

        for _ in range(200):  # the run's end waits on the thread's lock
            if await blocked_ending():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the run's end never waited on the thread's lock")
        await runs.fold(intake, run.thread_id, run.assistant_id, RunOptions(), cause="folded")
        await folding.commit()
    finally:  # a failure must not leave the thread locked: the pool's close would wait for it
        if intake.is_in_transaction():
            await folding.rollback()
        await pool.release(intake)
    await engine.shutdown(grace=10)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT status, cause_event_id FROM runs WHERE thread_id = $1 ORDER BY created_ts",
            run.thread_id,
        )
        flag = await conn.fetchval("SELECT pending_run FROM threads WHERE id = $1", run.thread_id)
        left = await conn.fetchval(
            "SELECT count(*) FROM pending_runs WHERE thread_id = $1", run.thread_id
        )
    assert [(r["status"], r["cause_event_id"]) for r in rows] == [
        ("completed", None),
        ("queued", "folded"),
    ]
    assert (flag, left) == (False, 0)
    await client.close()


async def test_the_pending_run_flag_follows_pending_runs_whoever_writes_them(
    pool: asyncpg.Pool,
) -> None:
    # Triggers keep `threads.pending_run`, so code of the previous release (which writes
    # `pending_runs` without knowing the flag) keeps it true during a rolling update.
    run = await queue_run(pool, "flag")
    thread = run.thread_id

    async def flag(conn: asyncpg.Connection) -> bool:
        value = await conn.fetchval("SELECT pending_run FROM threads WHERE id = $1", thread)
        return bool(value)

    async with pool.acquire() as conn:
        assert not await flag(conn)
        await conn.execute(  # the previous release's fold, word for word
            "INSERT INTO pending_runs (thread_id, assistant_id, options, cause_event_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (thread_id) DO UPDATE SET"
            " assistant_id = EXCLUDED.assistant_id, options = EXCLUDED.options,"
            " cause_event_id = EXCLUDED.cause_event_id",
            thread, run.assistant_id, {}, "old-release",
        )  # fmt: skip
        assert await flag(conn)
        await runs.fold(conn, thread, run.assistant_id, RunOptions(), cause="again")
        assert await flag(conn)
        taken = await runs.take_pending(conn, thread)
        assert taken is not None
        assert taken["cause_event_id"] == "again"
        assert not await flag(conn)
        await runs.fold(conn, thread, run.assistant_id, RunOptions(), cause="then deleted")
        assert await conn.execute("DELETE FROM threads WHERE id = $1", thread) == "DELETE 1"
        assert (
            await conn.fetchval("SELECT count(*) FROM pending_runs WHERE thread_id = $1", thread)
            == 0
        )
