"""Which outbox relay is active: a first choice is preferred, the others stand in; and the
active relay vacuums the outbox it deletes from.

Relays of this process against a database of their own (advisory locks are per database, so
the suite's running relays are not in the way), with the real broker for their producer.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schemas import topics
from services.core import outbox
from services.core import relay as relay_module
from services.core.relay import _FIRST_CHOICE, _RELAY_LOCK, Relay
from tests.system import Infrastructure


@pytest.fixture(scope="module")
async def database_url(infra: Infrastructure) -> str:
    return await infra.new_database("relay")


@pytest.fixture
async def producer(infra: Infrastructure) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def start(
    database_url: str,
    producer: AIOKafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Callable[..., asyncio.Task[None]]]:
    """Start a relay named `role` in a task; every one is cancelled at the end."""
    monkeypatch.setattr(relay_module, "HAND_OVER_CHECK_SECONDS", 0.2)
    caplog.set_level(logging.INFO, logger=relay_module.__name__)
    tasks: list[asyncio.Task[None]] = []

    def relay(
        role: str,
        *,
        first_choice: bool,
        idle_seconds: float,
        dsn: str | None = None,
        gather_seconds: float = 0.0,
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(Relay(
            dsn or database_url, producer, role=role, first_choice=first_choice,
            idle_seconds=idle_seconds, gather_seconds=gather_seconds,
        ).run())  # fmt: skip
        tasks.append(task)
        return task

    yield relay
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def holder(database_url: str) -> str:
    """The role of the relay holding the lock ('' when none)."""
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            _RELAY_LOCK,
        )
    finally:
        await conn.close()
    return "" if name is None else str(name).split()[1]


def relay_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the relays logged."""
    return [r.getMessage() for r in caplog.records if r.name == relay_module.__name__]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """`check` holds within 10 s (polled: the lock is in another process's tables)."""
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_stand_in_hands_over_to_a_first_choice_and_takes_over_when_it_stops(
    database_url: str, start: Callable[..., asyncio.Task[None]]
) -> None:
    start("stand-in", first_choice=False, idle_seconds=0.05)
    await eventually(lambda: _is(database_url, "stand-in"))

    first = start("first", first_choice=True, idle_seconds=0.05)
    await eventually(lambda: _is(database_url, "first"))
    for _ in range(10):  # and it keeps it: nothing takes it back
        await asyncio.sleep(0.1)
        assert await holder(database_url) == "first"

    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await eventually(lambda: _is(database_url, "stand-in"))


async def test_a_free_lock_waits_for_the_first_choice_while_one_runs(
    database_url: str, start: Callable[..., asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    """Another release's relay holds the lock; when it lets go, a first choice that polls
    twenty times slower than the stand-in still gets it."""
    other = await asyncpg.connect(database_url)
    try:
        await eventually(  # the last test's relays may be going still
            lambda: other.fetchval("SELECT pg_try_advisory_lock($1)", _RELAY_LOCK)
        )
        start("stand-in", first_choice=False, idle_seconds=0.01)
        start("first", first_choice=True, idle_seconds=0.2)
        await eventually(lambda: _announced(database_url))
    finally:
        await other.close()
    await eventually(lambda: _is(database_url, "first"))
    # The stand-in never led (it would have handed over at its next check, 0.2 s later).
    assert relay_lines(caplog) == ["outbox relay active"]


async def test_a_first_choice_that_stopped_asking_does_not_hold_the_others_back(
    database_url: str, start: Callable[..., asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    """A session holds the first choice's key and then says nothing, as a frozen process's
    would: after 5 s without a statement it no longer counts, and a stand-in relays."""
    frozen = await asyncpg.connect(database_url)
    try:
        await frozen.execute("SELECT pg_advisory_lock_shared($1)", _FIRST_CHOICE)
        start("stand-in", first_choice=False, idle_seconds=0.05)
        await asyncio.sleep(1)
        assert not relay_lines(caplog)  # while it was fresh, the stand-in did not lead
        await eventually(lambda: _is(database_url, "stand-in"))
        assert await _announced(database_url)  # the key is still held: it was the silence
    finally:
        await frozen.close()


async def test_a_first_choice_that_failed_stands_back_before_it_takes_over_again(
    database_url: str, start: Callable[..., asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "DEMOTED_SECONDS", 6.0)
    start("first", first_choice=True, idle_seconds=0.05)
    await eventually(lambda: _is(database_url, "first"))
    start("stand-in", first_choice=False, idle_seconds=0.05)

    conn = await asyncpg.connect(database_url)  # the first choice's connection fails
    try:
        assert await conn.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'threadbus first %'"
        )
    finally:
        await conn.close()
    await eventually(lambda: _is(database_url, "stand-in"))
    await asyncio.sleep(2)  # the first choice is back (after 1 s) but stands back (6 s)
    assert await holder(database_url) == "stand-in"
    await eventually(lambda: _is(database_url, "first"))


async def test_a_first_choice_that_stood_back_while_relaying_leads_as_one_again(
    database_url: str, start: Callable[..., asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, it fails and comes back as an ordinary relay (nobody else to take the lock);
    when its time is up it says again that it is a first choice, while it relays."""
    # Longer than the 1 s before it retries.
    monkeypatch.setattr(relay_module, "DEMOTED_SECONDS", 3.0)
    start("first", first_choice=True, idle_seconds=0.05)
    await eventually(lambda: _is(database_url, "first"))
    assert await _announced(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'threadbus first %'"
        )
        await eventually(lambda: _announced(database_url, expected=False))
    finally:
        await conn.close()
    await eventually(lambda: _is(database_url, "first"))
    assert await _announced(database_url, expected=False)  # relaying, standing back
    await eventually(lambda: _announced(database_url))
    assert await holder(database_url) == "first"


OWNERSHIP = "ownership"
"""Decide whether a relay may vacuum as before PostgreSQL 17 (no MAINTAIN privilege)."""


async def test_an_idle_relay_reads_at_once_and_a_busy_one_gathers_commits(
    database_url: str, start: Callable[..., asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gather = 0.5
    reads: list[tuple[float, int]] = []  # when each read began, and how many rows it sent
    drain = Relay._drain

    async def counted(self: Relay, conn: asyncpg.Connection) -> int:
        began = time.monotonic()
        rows = await drain(self, conn)
        if rows:
            reads.append((began, rows))
        return rows

    monkeypatch.setattr(Relay, "_drain", counted)
    conn = await asyncpg.connect(database_url)
    try:
        await eventually(lambda: _outbox_empty(conn))  # what earlier tests left is gone
        start("first", first_choice=True, idle_seconds=30, gather_seconds=gather)
        await eventually(lambda: _is(database_url, "first"))
        await asyncio.sleep(gather * 2)  # idle for longer than the gathering time
        committed = time.monotonic()
        await _write_events(conn, 1)
        await eventually(lambda: _read(reads, 1))
        assert reads[0][0] - committed < gather / 2  # an idle relay reads at once
        await _write_events(conn, 2)  # soon after that read: these wait out the rest
        await asyncio.sleep(gather / 5)
        await _write_events(conn, 3)
        await eventually(lambda: _read(reads, 2))
        assert reads[1][1] == 5  # both commits in one read
        assert reads[1][0] - reads[0][0] >= gather
    finally:
        await conn.close()


async def _read(reads: list[tuple[float, int]], count: int) -> bool:
    return len(reads) >= count


@pytest.fixture(params=["privilege", OWNERSHIP])
def may_vacuum_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way a relay asks whether it may vacuum: the server here is 17 or newer, so the way
    for older servers runs only with the version that has `MAINTAIN` raised."""
    if request.param == OWNERSHIP:
        monkeypatch.setattr(relay_module, "MAINTAIN_SINCE", 99)
    return str(request.param)


@pytest.mark.usefixtures("may_vacuum_by")
async def test_the_active_relay_vacuums_the_outbox_after_it_deleted_rows_and_not_while_idle(
    database_url: str, start: Callable[..., asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "VACUUM_SECONDS", 0.2)
    conn = await asyncpg.connect(database_url)
    try:
        start("first", first_choice=True, idle_seconds=0.05)
        await eventually(lambda: _is(database_url, "first"))
        before = await _vacuums(conn)
        await asyncio.sleep(1.5)  # seven periods with nothing to relay
        assert await _vacuums(conn) == before

        await _write_events(conn, 50)
        await eventually(lambda: _outbox_empty(conn))  # sent, and deleted
        await _vacuumed_since(conn, before)
        await asyncio.sleep(0.5)  # the last deletes' vacuum, if it was not that one
        after = await _vacuums(conn)
        await asyncio.sleep(1.5)  # idle again: seven periods, nothing deleted
        assert await _vacuums(conn) == after
    finally:
        await conn.close()


@pytest.mark.parametrize("statement", ["VACUUM no_such_table", "SELECT pg_sleep(5)"])
async def test_a_relay_whose_vacuum_is_refused_or_too_slow_relays_on_and_waits_to_try_again(
    database_url: str,
    start: Callable[..., asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    statement: str,
) -> None:
    """The statement stands in for a `VACUUM` Postgres refuses, and for one that waits (on a
    page another session has pinned, say) longer than its limit."""
    monkeypatch.setattr(relay_module, "_VACUUM", statement)
    monkeypatch.setattr(relay_module, "VACUUM_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(relay_module, "VACUUM_SECONDS", 0.05)
    conn = await asyncpg.connect(database_url)
    try:
        start("first", first_choice=True, idle_seconds=0.05)
        await eventually(lambda: _is(database_url, "first"))
        for _ in range(3):
            await _write_events(conn, 5)
            await eventually(lambda: _outbox_empty(conn))
            await asyncio.sleep(0.3)  # six periods: time enough to try again, if it did
    finally:
        await conn.close()
    failures = [line for line in relay_lines(caplog) if line.startswith(
        "outbox relay: could not vacuum the outbox"
    )]  # fmt: skip
    assert len(failures) == 1  # then it waits (60 s) before it asks Postgres again
    # One relay, never restarted: a vacuum that failed is not a failure of the relay.
    assert relay_lines(caplog).count("outbox relay active") == 1


@pytest.mark.usefixtures("may_vacuum_by")
async def test_a_relay_that_may_not_vacuum_the_outbox_leaves_it_to_autovacuum(
    database_url: str,
    infra: Infrastructure,
    start: Callable[..., asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its database role does not own the outbox: it relays, and sends no `VACUUM` that
    Postgres would only answer with a warning in its log."""
    monkeypatch.setattr(relay_module, "VACUUM_SECONDS", 0.2)
    role, password = f"threadbus_relay_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    server_log = infra.postgres.log_path if infra.postgres else None  # None: in a container
    logged = server_log.stat().st_size if server_log else 0
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT SELECT, DELETE ON outbox"
            f" TO {role}; GRANT INSERT ON run_streams TO {role}; GRANT SELECT ON runs TO {role}"
        )
        url = urlsplit(database_url)
        host = url.netloc.rsplit("@", 1)[-1]  # host:port, as given (an IPv6 host in brackets)
        as_role = urlunsplit(url._replace(netloc=f"{role}:{password}@{host}"))
        task = start("first", first_choice=True, idle_seconds=0.05, dsn=as_role)
        await eventually(lambda: _is(database_url, "first"))
        before = await _vacuums(conn)
        await _write_events(conn, 20)
        await eventually(lambda: _outbox_empty(conn))
        await asyncio.sleep(1.0)  # five periods after it deleted rows
        assert await _vacuums(conn) == before
        assert await _logged(caplog, "outbox relay: may not vacuum the outbox")
        if server_log:
            with server_log.open("rb") as log:
                log.seek(logged)
                assert b"permission denied to vacuum" not in log.read()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role):
            await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await conn.close()


async def _write_events(conn: asyncpg.Connection, count: int) -> None:
    """Commit `count` events to the outbox, as a transaction of a service would."""
    events = [
        json.dumps(outbox.event("thread.created", "thread_relaytest", {"n": n}, None))
        for n in range(count)
    ]
    await conn.execute(
        "INSERT INTO outbox (topic, key, payload)"
        " SELECT $1, 'thread_relaytest', p::jsonb FROM unnest($2::text[]) AS p",
        topics.EVENTS, events,
    )  # fmt: skip


async def _outbox_empty(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT NOT EXISTS (SELECT 1 FROM outbox)"))


async def _vacuums(conn: asyncpg.Connection) -> int:
    """How often the outbox was vacuumed by a command (autovacuum counts apart)."""
    count = await conn.fetchval(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'"
    )
    return int(count)


async def _vacuumed_since(conn: asyncpg.Connection, before: int) -> None:
    """Wait until the outbox was vacuumed since `before`: a relay's `VACUUM` skips the table
    while autovacuum works on it, so more events follow each second until one counts."""
    async with asyncio.timeout(10):
        while await _vacuums(conn) <= before:
            await _write_events(conn, 5)
            await asyncio.sleep(1.0)


async def _logged(caplog: pytest.LogCaptureFixture, start: str) -> bool:
    return any(line.startswith(start) for line in relay_lines(caplog))


async def _is(database_url: str, role: str) -> bool:
    return await holder(database_url) == role


async def _announced(database_url: str, *, expected: bool = True) -> bool:
    """Whether a session holds the first choice's key is `expected`."""
    conn = await asyncpg.connect(database_url)
    try:
        held = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND mode = 'ShareLock' AND classid = 0 AND objid = $1 AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database()))",
            _FIRST_CHOICE,
        )
        return bool(held) == expected
    finally:
        await conn.close()
