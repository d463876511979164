"""The run state machine: the allowed transitions, the claim, and one `transition()`."""

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.runs import TERMINAL_STATUSES, Run, RunStatus
from services.core.store import runs as run_store

ALLOWED: dict[RunStatus, tuple[RunStatus, ...]] = {
    "in_progress": ("queued",),
    "requires_action": ("in_progress",),
    "queued": ("requires_action",),
    "completed": ("in_progress", "cancelling"),
    "incomplete": ("in_progress", "cancelling"),
    "failed": ("queued", "in_progress", "cancelling"),
    "cancelling": ("queued", "in_progress", "requires_action"),
    "cancelled": ("cancelling", "queued", "requires_action"),
    "expired": ("queued", "in_progress", "requires_action", "cancelling"),
}
"""Target status -> the statuses a run may be in to move there."""

_STAMP: dict[RunStatus, str] = {
    "completed": "completed_at",
    "failed": "failed_at",
    "cancelled": "cancelled_at",
}

_WRITABLE = {"required_action", "last_error", "usage", "incomplete_details"}


class LeaseLost(Exception):
    """This worker no longer owns the run: another took it over, or it changed status."""


@dataclass(frozen=True)
class Lease:
    """Proof that this worker drives a run; every write is fenced by the token."""

    run_id: str
    thread_id: str
    token: uuid.UUID
    owner: str
    cause: str
    """Id of the inbound event that queued the run (or the run's id): `causationid` of events."""


async def transition(
    conn: asyncpg.Connection,
    run_id: str,
    to: RunStatus,
    *,
    lease: Lease | None = None,
    fields: dict[str, Any] | None = None,
) -> Run | None:
    """Move the run to `to` if its current status allows it; None if it did not.

    With a lease the update also requires the lease token. Terminal statuses clear
    `expires_at`, `required_action` and the lease.
    """
    fields = dict(fields or {})
    assert set(fields) <= _WRITABLE, fields
    sets = ["status = $2", "updated_at = now()"]
    params: list[Any] = [run_id, to, list(ALLOWED[to])]
    if stamp := _STAMP.get(to):
        sets.append(f"{stamp} = epoch_now()")
    if to in TERMINAL_STATUSES:
        sets += ["expires_at = NULL", "required_action = NULL"]
        sets += ["lease_owner = NULL", "lease_token = NULL", "lease_expires_at = NULL"]
    for name, value in fields.items():
        params.append(value)
        sets.append(f"{name} = ${len(params)}")
    where = "id = $1 AND status = ANY($3::text[])"
    if lease is not None:
        params.append(lease.token)
        where += f" AND lease_token = ${len(params)}"
    row = await conn.fetchrow(
        f"UPDATE runs SET {', '.join(sets)} WHERE {where} RETURNING *", *params
    )
    return run_store.render(dict(row)) if row is not None else None


@dataclass(frozen=True)
class Claim:
    """A claimed run and the status it had before the claim."""

    lease: Lease
    run: Run
    previous_status: RunStatus


async def claim(
    conn: asyncpg.Connection, run_id: str, *, owner: str, lease_seconds: float
) -> Claim | None:
    """Take the lease of a queued run, or of an in-progress run whose lease expired.

    A queued run becomes `in_progress` with `started_at` set; a taken-over run keeps its
    status. Returns None when the run is not claimable (someone holds it, or it is finished).
    A row another transaction has locked is waited for, not skipped: skipping dropped
    wake-ups whenever a short update happened to hold the row at that moment.
    """
    token = uuid.uuid4()
    row = await conn.fetchrow(
        "WITH prev AS (SELECT id, status FROM runs WHERE id = $1 FOR UPDATE)"
        " UPDATE runs r SET status = 'in_progress',"
        " started_at = CASE WHEN prev.status = 'queued' THEN epoch_now() ELSE r.started_at END,"
        " lease_owner = $2, lease_token = $3,"
        " lease_expires_at = now() + make_interval(secs => $4),"
        " attempts = r.attempts + 1, updated_at = now()"
        " FROM prev WHERE r.id = prev.id AND (r.expires_at IS NULL OR r.expires_at > epoch_now())"
        " AND (prev.status = 'queued' OR"
        " (prev.status = 'in_progress' AND (r.lease_expires_at IS NULL"
        " OR r.lease_expires_at < now())))"
        " RETURNING r.*, prev.status AS previous_status",
        run_id,
        owner,
        token,
        float(lease_seconds),
    )
    if row is None:
        return None
    values = dict(row)
    return Claim(
        lease=Lease(
            run_id=run_id,
            thread_id=values["thread_id"],
            token=token,
            owner=owner,
            cause=values["cause_event_id"] or run_id,
        ),
        run=run_store.render(values),
        previous_status=values["previous_status"],
    )


async def renew(conn: asyncpg.Connection, lease: Lease, lease_seconds: float) -> str | None:
    """Extend the lease; returns the run's status (`cancelling`: stop), None when it was lost."""
    value = await conn.fetchval(
        "UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND lease_token = $2 AND status IN ('in_progress', 'cancelling')"
        " RETURNING status",
        lease.run_id,
        lease.token,
        float(lease_seconds),
    )
    return str(value) if value is not None else None
