"""The run state machine: the allowed transitions, the claim, and one `transition()`."""

import functools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg

from schemas import topics
from schemas.runs import TERMINAL_STATUSES, Run, RunStatus
from services.core import db, metrics, outbox, tracing
from services.core.ids import new_id
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
    spend: dict[str, int] | None = None,
) -> Run | None:
    """Move the run to `to` if its current status allows it; None if it did not.

    With a lease the update also requires the lease token. Terminal statuses clear
    `expires_at`, `required_action` and the lease. `spend` adds a turn's tokens to the run's
    running total, which becomes its `usage`.
    """
    row = await moved(conn, move(run_id, to, lease=lease, fields=fields, spend=spend))
    return None if row is None else run_store.render(dict(row))


class Move(NamedTuple):
    """A run's move to `to` as SQL (`move`): the CTE that locks its thread (`WITH t AS ...`,
    or ''), the `UPDATE ... RETURNING`, and their parameters (`$1` on)."""

    to: RunStatus
    lock: str
    update: str
    params: list[Any]


async def moved(conn: asyncpg.Connection, how: Move) -> asyncpg.Record | None:
    """Run a `move`; its row as returned, None if the run did not move."""
    sql = f"{how.lock} {how.update}" if how.lock else how.update
    row = await conn.fetchrow(sql, *how.params)
    if row is not None:
        db.on_commit(conn, functools.partial(entered, how.to, row))
    return row


def move(
    run_id: str,
    to: RunStatus,
    *,
    lease: Lease | None = None,
    fields: dict[str, Any] | None = None,
    spend: dict[str, int] | None = None,
    locking_thread: str | None = None,
    unless_pending: bool = False,
) -> Move:
    """`transition`'s statement. `locking_thread` (the run's thread) locks the thread first,
    in the same statement (the lock order every writer of a thread's runs uses), and adds the
    thread's `pending_run` to the row, read at the row's latest version; `unless_pending`
    (with it): nothing is updated while the thread has a pending run."""
    fields = dict(fields or {})
    assert set(fields) <= _WRITABLE, fields
    sets = ["status = $2", "updated_at = now()"]
    params: list[Any] = [run_id, to, list(ALLOWED[to])]
    if spend is not None:
        assert "usage" not in fields, fields
        params += [spend["prompt_tokens"], spend["completion_tokens"], spend["total_tokens"]]
        total = spent_plus(len(params) - 2)
        sets += [f"spent = {total}", f"usage = {total}"]
    if stamp := _STAMP.get(to):
        sets.append(f"{stamp} = epoch_now()")
    if to in TERMINAL_STATUSES:
        sets += ["expires_at = NULL", "required_action = NULL"]
        sets += ["lease_owner = NULL", "lease_token = NULL", "lease_expires_at = NULL"]
    for name, value in fields.items():
        params.append(value)
        sets.append(f"{name} = ${len(params)}")
    where = "r.id = $1 AND r.status = ANY($3::text[])"
    if lease is not None:
        params.append(lease.token)
        where += f" AND r.lease_token = ${len(params)}"
    lock = join = ""
    if locking_thread is not None:
        params.append(locking_thread)
        lock = thread_locked(len(params))
        join, where = " FROM t", f"t.id = r.thread_id AND {where}"
        if unless_pending:
            where += " AND NOT t.pending_run"
    # Measured for the metrics: the run's age, and (leaving requires_action) how long it
    # waited there; a subquery in RETURNING reads the row as it was before this statement.
    measured = "extract(epoch FROM clock_timestamp() - created_ts) AS age_seconds"
    if locking_thread is not None:
        measured += ", t.pending_run"
    if to == "queued":
        measured += (", extract(epoch FROM clock_timestamp() - (SELECT p.updated_at FROM runs p"
                     " WHERE p.id = $1)) AS waited_seconds")  # fmt: skip
    update = f"UPDATE runs r SET {', '.join(sets)}{join} WHERE {where} RETURNING r.*, {measured}"
    return Move(to, lock, update, params)


def thread_locked(param: int) -> str:
    """A CTE `t` that locks the thread (its id: parameter `param`) before the statement touches
    any run row: `MATERIALIZED`, so the lock comes first, in the order every writer of a
    thread's runs uses (thread, then run). Join `t` to take the run. `t.pending_run` is the
    flag at the row's latest version (a lock waited for reads the version its holder wrote)."""
    return (
        "WITH t AS MATERIALIZED"
        f" (SELECT id, pending_run FROM threads WHERE id = ${param} FOR UPDATE)"
    )


def spent_plus(first: int) -> str:
    """The run's `spent` (alias `r`) plus a turn's tokens: parameters `first` to `first + 2`
    (prompt, completion, total)."""
    return (
        "jsonb_build_object("
        + ", ".join(
            f"'{name}', (r.spent->>'{name}')::int + ${first + i}"
            for i, name in enumerate(("prompt_tokens", "completion_tokens", "total_tokens"))
        )
        + ")"
    )


def entered(status: RunStatus, row: asyncpg.Record) -> None:
    """The metrics of a run that moved to `status` (`row`: `moved`'s)."""
    metrics.RUN_TRANSITIONS.labels(status).inc()
    if status in TERMINAL_STATUSES:
        metrics.RUN_PHASE.labels("total").observe(float(row["age_seconds"]))
    elif status == "queued":
        metrics.RUN_PHASE.labels("tools").observe(float(row["waited_seconds"]))


@dataclass(frozen=True)
class Claim:
    """A claimed run and the status it had before the claim."""

    lease: Lease
    run: Run
    previous_status: RunStatus
    trace: str | None = None
    """The trace context the run was created in (`tracing`), which its turns continue."""
    steps_taken: int = 0
    """How many steps the run has taken (the turn's limit counts them)."""
    spent: dict[str, int] = field(default_factory=dict)
    """The tokens the run's turns spent so far."""
    open_step: bool = False
    """A step is still open: a tool step whose results came in, or a reply a crashed attempt
    opened; the turn resumes it under the locks."""
    tool_turns: bool = True
    """The thread had a finished tool step when claimed (else the model's context has no tool
    turns to read, unless resuming an open step finishes one)."""
    thread_messages: list[dict[str, Any]] | None = None
    """The thread's message rows in order, read by the claim unless a step is open (resuming it
    may change what the turn must read): the turn's timeline needs no statement of its own."""


_RUN_AS_WIRE = outbox.wire_sql(Run, "c")
"""The claimed run as its wire object (`Run`), built by Postgres: the claim's event is written
by the claim's own statement."""
_IN_PROGRESS = outbox.event_sql(
    "thread.run.in_progress", subject="c.thread_id", data=_RUN_AS_WIRE,
    cause="coalesce(nullif(c.cause_event_id, ''), c.id)", run_id="c.id", event_id="$6", time="$7",
)  # fmt: skip

_CLAIM = (
    "WITH prev AS (SELECT id, status, updated_at, lease_owner FROM runs"
    " WHERE id = $1 FOR UPDATE),"
    " c AS (UPDATE runs r SET status = 'in_progress',"
    " started_at = CASE WHEN prev.status = 'queued' THEN epoch_now() ELSE r.started_at END,"
    " lease_owner = $2, lease_token = $3,"
    " lease_expires_at = now() + make_interval(secs => $4),"
    " attempts = r.attempts + 1, updated_at = now()"
    " FROM prev WHERE r.id = prev.id AND (r.expires_at IS NULL OR r.expires_at > epoch_now())"
    " AND (prev.status = 'queued' OR"
    " (prev.status = 'in_progress' AND (r.lease_expires_at IS NULL"
    " OR r.lease_expires_at < now())))"
    " RETURNING r.*, prev.status AS previous_status, prev.lease_owner AS previous_owner,"
    " extract(epoch FROM clock_timestamp() - prev.updated_at) AS waited_seconds,"
    " (SELECT count(*) FROM run_steps WHERE run_id = r.id) AS steps_taken,"
    " EXISTS (SELECT 1 FROM run_steps WHERE run_id = r.id AND status = 'in_progress')"
    " AS open_step,"
    " EXISTS (SELECT 1 FROM run_steps WHERE thread_id = r.thread_id"
    " AND type = 'tool_calls' AND status = 'completed') AS tool_turns,"
    " CASE WHEN NOT EXISTS (SELECT 1 FROM run_steps WHERE run_id = r.id"
    " AND status = 'in_progress') THEN (SELECT coalesce(json_agg(m ORDER BY m.seq), '[]')"
    " FROM messages m WHERE m.thread_id = r.thread_id) END AS thread_messages),"
    " announced AS (INSERT INTO outbox (topic, key, payload, trace)"
    f" SELECT $5, c.thread_id, {_IN_PROGRESS}, $8 FROM c WHERE c.previous_status = 'queued')"
    " SELECT * FROM c"
)


async def claim(
    conn: asyncpg.Connection, run_id: str, *, owner: str, lease_seconds: float
) -> Claim | None:
    """Take the lease of a queued run, or of an in-progress run whose lease expired.

    A queued run becomes `in_progress` with `started_at` set, and `thread.run.in_progress` is
    written to the outbox by the same statement (`outbox.event`'s envelope, the run rendered
    by Postgres), so the claim is one round trip where BEGIN, the update, the outbox insert
    and COMMIT were four. The run's JSON columns are copied as stored: they hold what
    `Run`'s models dumped when the run was created. A taken-over run keeps its status and announces
    nothing. Returns None when the run is not claimable (someone holds it, or it is finished).
    A row another transaction has locked is waited for, not skipped: skipping dropped
    wake-ups whenever a short update happened to hold the row at that moment.
    """
    # Its event is inserted by the statement: inside a transaction it would take an id ahead
    # of the events that transaction queued before it (`db.Connection` inserts them at commit).
    assert not conn.is_in_transaction(), "claim outside a transaction"
    token = uuid.uuid4()
    row = await conn.fetchrow(
        _CLAIM, run_id, owner, token, float(lease_seconds), topics.EVENTS, new_id("evt"),
        datetime.now(UTC).isoformat(), tracing.current(),
    )  # fmt: skip
    if row is None:
        return None
    values = dict(row)
    steps_taken, open_step = values.pop("steps_taken"), values.pop("open_step")
    tool_turns, thread_messages = values.pop("tool_turns"), values.pop("thread_messages")
    db.on_commit(conn, functools.partial(_claimed, values))
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
        trace=values["trace"],
        steps_taken=int(steps_taken),
        spent=dict(values["spent"]),
        open_step=bool(open_step),
        tool_turns=bool(tool_turns),
        thread_messages=thread_messages,
    )


def _claimed(values: dict[str, Any]) -> None:
    """A claim ends a wait: in the queue, or (a parked run) for server-side tool results."""
    if values["previous_status"] == "queued":
        metrics.RUN_TRANSITIONS.labels("in_progress").inc()
        metrics.RUN_PHASE.labels("queued").observe(float(values["waited_seconds"]))
    elif values["previous_owner"] is None:
        metrics.RUN_PHASE.labels("tools").observe(float(values["waited_seconds"]))


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


async def status_held(conn: asyncpg.Connection, lease: Lease) -> str | None:
    """The run's status while the lease is still this one; None when it was lost."""
    value = await conn.fetchval(
        "SELECT status FROM runs WHERE id = $1 AND lease_token = $2", lease.run_id, lease.token
    )
    return None if value is None else str(value)
