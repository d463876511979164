"""The `threadbus` command: up, status, tail, migrate, create-topics, keys, export, ingest."""

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

from services.core import bus, db, keys, ops
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


async def _keys(args: argparse.Namespace) -> int:
    conn = await db.connect(_env("database_url"))
    try:
        if args.action == "create":
            _, key = await keys.create(conn, args.project)
            print(key)  # alone on stdout, for scripts; shown this once
            return 0
        if args.action == "revoke":
            if await keys.revoke(conn, args.key_id):
                print(f"revoked {args.key_id}")
                return 0
            print(f"threadbus: no live key {args.key_id!r}", file=sys.stderr)
            return 1
        for info in await keys.listing(conn):
            state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "live"
            print(f"{info.id}  {info.project}  {info.redacted}  "
                  f"created {info.created_at:%Y-%m-%d %H:%M}  {state}")  # fmt: skip
        return 0
    finally:
        await conn.close()


def _tail(thread_id: str, from_start: bool) -> int:
    async def follow() -> None:
        bootstrap = _env("kafka_bootstrap_servers")
        async for line in ops.tail(bootstrap, thread_id, from_start=from_start):
            print(line, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console command."""
    parser = argparse.ArgumentParser(prog="threadbus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the whole system (embedded Postgres and Kafka if not set)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("create-topics", help="create the Kafka topics")
    key_cmd = sub.add_parser("keys", help="create, list and revoke API keys")
    key_sub = key_cmd.add_subparsers(dest="action", required=True)
    create = key_sub.add_parser("create", help="print a new key (shown only this once)")
    create.add_argument("--project", required=True, help="the project the key acts in")
    key_sub.add_parser("list", help="every key: id, project, redacted key, state")
    revoke = key_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", help="the key's id (key_...), from `threadbus keys list`")
    status = sub.add_parser(
        "status", help="services up, runs by status, outbox, consumer lag, dead letters"
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    tail = sub.add_parser("tail", help="a thread's events as they happen, one line each")
    tail.add_argument("thread_id")
    tail.add_argument("--from-start", action="store_true", help="what the broker still holds")
    export = sub.add_parser("export", help="print a thread's archived transcript as JSONL")
    export.add_argument("thread_id")
    export.add_argument("--events", action="store_true", help="every archived event instead")
    ingest = sub.add_parser(
        "ingest", help="upload a folder's files into a vector store (progress on stderr)"
    )
    ingest.add_argument("folder", type=Path)
    ingest.add_argument("--vector-store", help="an existing store (default: a new one)")
    ingest.add_argument("--name", help="name of the new store (default: the folder's name)")
    ingest.add_argument("--pattern", default="*", help="which files, e.g. '*.pdf' (default: all)")
    ingest.add_argument(
        "--base-url",
        default=os.environ.get("THREADBUS_API_URL", "http://localhost:8000/v1"),
        help="the API (default: THREADBUS_API_URL or http://localhost:8000/v1)",
    )
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
    if args.command == "keys":
        return asyncio.run(_keys(args))
    if args.command == "status":
        report = asyncio.run(ops.status(_env("database_url"), _env("kafka_bootstrap_servers")))
        print(json.dumps(report) if args.json else ops.render_status(report))
        return 0
    if args.command == "tail":
        return _tail(args.thread_id, args.from_start)
    if args.command == "ingest":
        from services.core.folder_ingest import ingest as run_ingest

        if not args.folder.is_dir():
            sys.exit(f"threadbus ingest: {args.folder} is not a folder")
        store_id, failed = run_ingest(
            args.folder,
            base_url=args.base_url,
            api_key=os.environ.get("THREADBUS_API_KEY", "unused"),
            store_id=args.vector_store,
            name=args.name,
            pattern=args.pattern,
        )
        print(store_id)  # alone on stdout, for scripts
        return 1 if failed else 0
    return asyncio.run(_export(args.thread_id, args.events))


if __name__ == "__main__":
    sys.exit(main())
