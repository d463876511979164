"""The Postgres pool: one per process, JSON codecs, and the migration runner."""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import asyncpg.transaction

log = logging.getLogger(__name__)

Pool = asyncpg.Pool

ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,  # e.g. "connection is closed" after a server restart
    asyncpg.InternalClientError,  # a connection a restart left mid-protocol (the pool drops it)
)
"""What a lost or restarting database raises: transient, retried by the caller."""

_MIGRATIONS_LOCK = 7_411_001  # advisory lock key: one migrator at a time


_OUTBOX_INSERT = (
    "INSERT INTO outbox (topic, key, payload, trace)"
    " SELECT topic, key, payload, trace"
    " FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[])"
    " WITH ORDINALITY AS r(topic, key, payload, trace, n) ORDER BY n"
)


class Connection(asyncpg.Connection):  # type: ignore[misc]
    """A connection whose transactions write their outbox rows in one statement, at the end.

    `outbox.enqueue` inside a transaction appends to `outbox_pending`; the transaction (or a
    savepoint) inserts everything pending right before it commits, and a rolled-back one
    forgets what it queued. Rows keep the order they were queued in. One insert per
    transaction instead of one per event: a round trip each was most of a run's cost.

    `after_commit` holds what must happen only once the outermost transaction committed
    (metrics of the changes it made); a rollback forgets what it added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outbox_pending: list[tuple[str, str | None, Any, str | None]] = []
        self.after_commit: list[Callable[[], None]] = []
        self.session_settings: dict[str, str] = {}
        """Session settings this connection was given (pool `setup` skips a repeat)."""

    def transaction(
        self, *, isolation: Any = None, readonly: bool = False, deferrable: bool = False
    ) -> "_Transaction":
        """A transaction (or savepoint) that writes the pending outbox rows before it ends."""
        self._check_open()
        return _Transaction(self, isolation, readonly, deferrable)

    async def flush_outbox(self) -> None:
        """Insert every pending outbox row (inside the current transaction)."""
        if not self.outbox_pending:
            return
        rows, self.outbox_pending = self.outbox_pending, []
        topics, keys, payloads, traces = zip(*rows, strict=True)
        await self.execute(_OUTBOX_INSERT, list(topics), list(keys), list(payloads), list(traces))


def on_commit(conn: asyncpg.Connection, action: Callable[[], None]) -> None:
    """Call `action` once the transaction `conn` is in commits (at once outside one)."""
    hooks = getattr(conn, "after_commit", None)
    if hooks is not None and conn.is_in_transaction():
        hooks.append(action)
    else:
        _committed(action)


def _committed(hook: Callable[[], None]) -> None:
    """Run a hook of a committed change: one that fails is logged, since the change it
    follows is done and must not look rolled back to the caller."""
    try:
        hook()
    except Exception:
        log.exception("an after-commit hook failed")


class _Transaction(asyncpg.transaction.Transaction):  # type: ignore[misc]
    __slots__ = ("_hooks", "_mark")

    async def __aenter__(self) -> None:
        self._mark = len(self._connection.outbox_pending)
        self._hooks = len(self._connection.after_commit)
        await super().__aenter__()

    async def __aexit__(self, extype: Any, ex: Any, tb: Any) -> None:
        conn: Connection = self._connection
        if extype is None:
            try:
                await conn.flush_outbox()
            except BaseException as exc:
                del conn.after_commit[self._hooks :]
                await super().__aexit__(type(exc), exc, exc.__traceback__)
                raise
        else:
            del conn.outbox_pending[self._mark :]
            del conn.after_commit[self._hooks :]
        try:
            await super().__aexit__(extype, ex, tb)
        except BaseException:
            del conn.after_commit[self._hooks :]
            raise
        if extype is None and not self._nested:
            hooks, conn.after_commit = conn.after_commit, []
            for hook in hooks:
                _committed(hook)


async def listen(
    dsn: str,
    channels: Mapping[str, Callable[[str], object]],
    *,
    connected: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    lost: Callable[[], None] | None = None,
    role: str | None = None,
) -> None:
    """Hand every NOTIFY payload on `channels` to its callback, until cancelled.

    Reconnects after any loss (`lost` is told, and `connected` runs once listening again:
    whatever was notified meanwhile was missed, so it catches up there).
    """
    while True:
        closed = asyncio.Event()
        try:
            conn = await connect(dsn, role=role)
        except ERRORS as exc:
            log.warning("listener on %s: %s; reconnecting", ", ".join(channels), exc)
            await asyncio.sleep(1)
            continue
        try:
            conn.add_termination_listener(lambda *_, done=closed: done.set())
            for channel, callback in channels.items():
                await conn.add_listener(channel, lambda *args, call=callback: call(str(args[-1])))
            if connected is not None:
                await connected(conn)
            await closed.wait()
        except ERRORS as exc:
            log.warning("listener on %s: %s; reconnecting", ", ".join(channels), exc)
        finally:
            if lost is not None:
                lost()
            with contextlib.suppress(*ERRORS):
                await asyncio.shield(conn.close(timeout=2))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset query (a round trip on every release): pool
    connections hold no session state to undo (no LISTEN, no session advisory lock; the one
    session setting, the API's project, is checked on every acquire and set if it differs).

    asyncpg still rolls back a transaction left open (a task cancelled inside one) before this
    runs, so its row locks do not outlive it; what is left here is the outbox rows that
    transaction queued, which must not ride on the connection's next transaction.
    """
    conn.outbox_pending.clear()
    conn.after_commit.clear()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


async def connect(dsn: str, *, role: str | None = None) -> asyncpg.Connection:
    """One connection with the JSON codecs (for LISTEN, locks and one-off commands); with a
    `role`, its `application_name` is `threadbus <role> <pid>` (in `pg_stat_activity`)."""
    settings = {"application_name": f"threadbus {role} {os.getpid()}"} if role else None
    conn = await asyncpg.connect(
        dsn, timeout=10, connection_class=Connection, server_settings=settings
    )
    await _init_connection(conn)
    return conn


async def create_pool(
    dsn: str,
    *,
    size: int = 10,
    setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    name: str = "threadbus",
    idle_transaction_seconds: float = 0,
) -> asyncpg.Pool:
    """The process's pool, with JSON columns decoded to Python values; `setup` runs on every
    acquire.

    `name` is each connection's `application_name` (pg_stat_activity tells services apart).
    With `idle_transaction_seconds`, Postgres ends a connection left idle inside a transaction
    that long: a process frozen mid-transaction (stopped, swapped out, a VM paused) would
    otherwise hold its row locks, and the thread and run they guard, until it woke.
    """
    settings = {"application_name": name[:63]}
    if idle_transaction_seconds > 0:
        settings["idle_in_transaction_session_timeout"] = str(int(idle_transaction_seconds * 1000))
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, init=_init_connection, setup=setup, timeout=10,
        command_timeout=60, connection_class=Connection, reset=_keep_session,
        server_settings=settings,
    )  # fmt: skip
    assert pool is not None
    return pool


def migrations_dir() -> Path:
    """`migrations/` beside the working directory, else beside the source tree."""
    for candidate in (
        Path.cwd() / "migrations",
        Path(__file__).resolve().parents[2] / "migrations",
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no migrations/ directory found beside the working directory")


async def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply numbered `.sql` migrations not yet applied, in order; returns their names."""
    directory = directory or migrations_dir()
    conn = await connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATIONS_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in sorted(directory.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.name)
            log.info("applied migration %s", path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATIONS_LOCK)
        await conn.close()
    return applied
