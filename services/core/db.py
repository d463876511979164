"""The Postgres pool: one per process, JSON codecs, and the migration runner."""

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

Connection = asyncpg.Connection
Pool = asyncpg.Pool

ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,  # e.g. "connection is closed" after a server restart
)
"""What a lost or restarting database raises: transient, retried by the caller."""

_MIGRATIONS_LOCK = 7_411_001  # advisory lock key: one migrator at a time


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the JSON codecs (for LISTEN, locks and one-off commands)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    await _init_connection(conn)
    return conn


async def create_pool(
    dsn: str,
    *,
    size: int = 10,
    setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    """The process's pool, with JSON columns decoded to Python values; `setup` runs on every
    acquire."""
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, init=_init_connection, setup=setup, timeout=10,
        command_timeout=60,
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
