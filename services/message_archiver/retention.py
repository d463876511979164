"""Pruning the bookkeeping tables, in small batches so no statement holds locks for long."""

import logging

import asyncpg

from services.message_archiver.settings import Settings

log = logging.getLogger(__name__)

BATCH = 5_000

# table: (age column, setting); each table has an index on its age column (migration 0007).
_TABLES = {
    "processed_events": ("processed_at", "retain_processed_events_days"),
    "archive": ("archived_at", "retain_archive_days"),
    "outbox_dead": ("failed_at", "retain_dead_outbox_days"),
    "run_streams": ("recorded_at", "retain_run_streams_days"),
}
DEAD_WORKERS_DAYS = 1.0
"""Rows of processes that stopped heartbeating a day ago (killed, not stopped): kept a day
for `threadbus status` to show, then pruned."""


async def prune(pool: asyncpg.Pool, settings: Settings) -> dict[str, int]:
    """Delete what is older than its retention; returns how many rows went, by table."""
    deleted: dict[str, int] = {}
    for table, (column, setting) in _TABLES.items():
        days = float(getattr(settings, setting))
        if days > 0:
            deleted[table] = await _prune(pool, table, column, days)
    deleted["workers"] = await _prune(pool, "workers", "heartbeat_at", DEAD_WORKERS_DAYS)
    if any(deleted.values()):
        log.info("retention pruned %s", ", ".join(f"{t}: {n}" for t, n in deleted.items() if n))
    return deleted


async def _prune(pool: asyncpg.Pool, table: str, column: str, days: float) -> int:
    # Table and column names come from the constants above, never from input.
    total = 0
    while True:
        async with pool.acquire() as conn:
            status = await conn.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table}"
                f" WHERE {column} < now() - make_interval(secs => $1) LIMIT {BATCH}))",
                days * 86_400,
            )
        count = int(status.split()[-1])
        total += count
        if count < BATCH:
            return total
