"""API keys: created (shown once), listed, revoked, and checked by the API.

A key is `tb-` and 43 URL-safe characters (256 random bits). Postgres keeps its SHA-256 and a
redacted form for listings (`tb-Ab3…x9Q`); the key itself is never stored or logged.
"""

import hashlib
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.core import db
from services.core.ids import new_id

PREFIX = "tb-"


@dataclass(frozen=True)
class KeyInfo:
    """A key as `threadbus keys list` shows it."""

    id: str
    project: str
    redacted: str
    created_at: datetime
    revoked_at: datetime | None


def digest(key: str) -> bytes:
    """What the table keeps of a key."""
    return hashlib.sha256(key.encode()).digest()


def redact(key: str) -> str:
    """A key with all but its ends hidden, as error messages and listings show it."""
    return f"{key[:6]}…{key[-3:]}" if len(key) > 12 else "…"


async def create(conn: asyncpg.Connection, project: str) -> tuple[str, str]:
    """A new key for `project` (created if new); returns (key id, key)."""
    async with conn.transaction():
        project_id = await conn.fetchval(
            "INSERT INTO projects (id, name) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            new_id("proj"),
            project,
        )
        key = PREFIX + secrets.token_urlsafe(32)
        key_id = new_id("key")
        await conn.execute(
            "INSERT INTO api_keys (id, project_id, hash, redacted) VALUES ($1, $2, $3, $4)",
            key_id,
            project_id,
            digest(key),
            redact(key),
        )
    return key_id, key


async def listing(conn: asyncpg.Connection) -> list[KeyInfo]:
    """Every key, oldest first."""
    rows = await conn.fetch(
        "SELECT k.id, p.name AS project, k.redacted, k.created_at, k.revoked_at"
        " FROM api_keys k JOIN projects p ON p.id = k.project_id ORDER BY k.created_at, k.id"
    )
    return [KeyInfo(**dict(row)) for row in rows]


async def revoke(conn: asyncpg.Connection, key_id: str) -> bool:
    """Revoke a key at once; False if there is no such key or it was revoked already."""
    revoked = await conn.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id",
        key_id,
    )
    return revoked is not None


async def any_exist(conn: asyncpg.Connection) -> bool:
    """Whether keys were ever created (revoked ones count: revoking every key does not open
    the API)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM api_keys)"))


async def project_of(conn: asyncpg.Connection, key: str | None) -> tuple[bool, str | None]:
    """(whether keys are in force, the project of `key` if it is a live one)."""
    row = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM api_keys) AS enforced,"
        " (SELECT project_id FROM api_keys WHERE hash = $1 AND revoked_at IS NULL) AS project",
        digest(key) if key else b"",
    )
    assert row is not None
    return bool(row["enforced"]), row["project"]


def is_loopback(host: str) -> bool:
    """Whether listening on `host` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


async def check_exposure(database_url: str, host: str, allowed: bool) -> str | None:
    """Why the API must not start (listening beyond loopback with no key), or None."""
    if allowed or is_loopback(host):
        return None
    try:
        conn = await db.connect(database_url)
        try:
            exist = await any_exist(conn)
        finally:
            await conn.close()
    except asyncpg.UndefinedTableError:
        exist = False  # not migrated yet: no keys
    except (OSError, asyncpg.PostgresError) as exc:
        return f"threadbus api: cannot tell whether API keys exist ({exc}); is Postgres up?"
    return exposure_refusal(host, allowed, keys_exist=exist)


def exposure_refusal(host: str, allowed: bool, *, keys_exist: bool) -> str | None:
    """Why listening on `host` is refused (beyond loopback, no key, not allowed), or None."""
    if allowed or keys_exist or is_loopback(host):
        return None
    return (
        f"threadbus api: refusing to listen on {host} with no API keys: anyone who reaches the"
        " port could use it. Create a key (threadbus keys create --project NAME), listen on"
        " loopback (THREADBUS_API_HOST=127.0.0.1), or set"
        " THREADBUS_ALLOW_UNAUTHENTICATED_NETWORK_ACCESS=true for a trusted network."
    )
