"""The `threadbus` command: up, migrate, create-topics, export."""

import argparse
import asyncio
import json
import sys

from services.core import bus, db
from services.core.store import archive


def _env(name: str) -> str:
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class _One(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="THREADBUS_", env_file=".env", extra="ignore")
        database_url: str | None = None
        kafka_bootstrap_servers: str | None = None
        partitions: int = 8

    value = getattr(_One(), name)
    if value is None:
        sys.exit(f"threadbus: set THREADBUS_{name.upper()}")
    return str(value)


async def _export(thread_id: str, events: bool) -> int:
    conn = await db.connect(_env("database_url"))
    try:
        rows = archive.events(conn, thread_id) if events else archive.transcript(conn, thread_id)
        count = 0
        async for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    finally:
        await conn.close()
    if count == 0:
        print(f"threadbus: nothing archived for {thread_id!r}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console command."""
    parser = argparse.ArgumentParser(prog="threadbus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the whole system (embedded Postgres and Kafka if not set)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("create-topics", help="create the Kafka topics")
    export = sub.add_parser("export", help="print a thread's archived transcript as JSONL")
    export.add_argument("thread_id")
    export.add_argument("--events", action="store_true", help="every archived event instead")
    args = parser.parse_args(argv)
    if args.command == "up":
        from services.core.supervisor import up

        return up()
    if args.command == "migrate":
        applied = asyncio.run(db.migrate(_env("database_url")))
        print(f"applied {len(applied)} migration(s)")
        return 0
    if args.command == "create-topics":
        created = asyncio.run(
            bus.create_topics(_env("kafka_bootstrap_servers"), int(_env("partitions")))
        )
        print(f"created {len(created)} topic(s)")
        return 0
    return asyncio.run(_export(args.thread_id, args.events))


if __name__ == "__main__":
    sys.exit(main())
