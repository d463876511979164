"""The transactional outbox: events are written with the state change, then relayed in order
(`services.core.relay`)."""

from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from schemas import topics
from services.core import tracing
from services.core.ids import new_id

CHANNEL = "threadbus_outbox"
"""What every commit that writes outbox rows notifies (the trigger of migration 0013): the relay
wakes on it, the API's stream bell reads which threads it names."""
DROPPED = "threadbus.event.dropped"
"""Takes the place of an event the broker refused (too large); `data` names it."""
OUTBOX_ID_HEADER = "threadbus-outbox-id"
"""Kafka header with the outbox row id: the commit order, which a stream uses as a floor."""


async def high_water(conn: asyncpg.Connection) -> int:
    """The largest outbox id handed out so far: events written later get larger ids."""
    value = await conn.fetchval(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_id_seq"
    )
    return int(value)


async def enqueue(conn: asyncpg.Connection, topic: str, key: str | None, payload: Any) -> None:
    """Write one record to the outbox, inside the caller's transaction.

    In a transaction the row is queued on the connection and inserted with the others just
    before it commits (`db.Connection`); outside one it is inserted at once.
    """
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", by_alias=True)
    trace = tracing.current()
    pending = getattr(conn, "outbox_pending", None)
    if pending is not None and conn.is_in_transaction():
        pending.append((topic, key, payload, trace))
        return
    await conn.execute(
        "INSERT INTO outbox (topic, key, payload, trace) VALUES ($1, $2, $3, $4)",
        topic, key, payload, trace,
    )  # fmt: skip


def _run_of(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if data.get("object") == "thread.run":
        return str(data["id"])
    run_id = data.get("run_id")
    return str(run_id) if run_id else None


def _envelope(
    type_: str, *, event_id: Any, subject: Any, time: Any, cause: Any, run_id: Any, data: Any
) -> dict[str, Any]:
    """Every outbound event's CloudEvents envelope: `event` fills it with values, `event_sql`
    with SQL expressions."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "threadbus",
        "type": type_,
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
        "causationid": cause,
        "runid": run_id,
        "data": data,
    }


def event(
    type_: str, thread_id: str, data: Any, cause: str | None, *, run_id: str | None = None
) -> dict[str, Any]:
    """An outbound CloudEvent with an Assistants stream event name and object.

    `runid` (a CloudEvents extension) names the run the event belongs to, so that a stream
    of one run can be picked out of its thread's partition.
    """
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True)
    return _envelope(
        type_, event_id=new_id("evt"), subject=thread_id, time=datetime.now(UTC).isoformat(),
        cause=cause, run_id=run_id or _run_of(data), data=data,
    )  # fmt: skip


class _Sql(str):
    """An SQL expression in `event_sql`'s envelope, as opposed to a constant."""


def _literal(text: str) -> str:
    """A string constant as an SQL literal (standard strings: only a quote is special)."""
    return "'" + text.replace("'", "''") + "'"


def event_sql(
    type_: str, *, subject: str, data: str, cause: str, run_id: str, event_id: str, time: str
) -> str:
    """`event`'s envelope as SQL, for a statement that writes its event itself: each argument
    but `type_` an SQL expression (`event_id` and `time` the parameters holding `new_id("evt")`
    and the service's clock, as `event` takes them)."""
    envelope = _envelope(
        type_, event_id=_Sql(f"{event_id}::text"), subject=_Sql(subject),
        time=_Sql(f"{time}::text"), cause=_Sql(cause), run_id=_Sql(run_id), data=_Sql(data),
    )  # fmt: skip
    fields = (
        f"'{key}', {value if isinstance(value, _Sql) else _literal(value)}"
        for key, value in envelope.items()
    )
    return f"jsonb_build_object({', '.join(fields)})"


def wire_sql(model: type[BaseModel], row: str, **overrides: str) -> str:
    """`model`'s wire object as SQL built by Postgres from the row aliased `row`, for a
    statement that writes its own events: each field the column of the same name (an integral
    float as `1.0`, as Python's JSON writes it), `object` the model's constant, or the SQL
    expression `overrides` gives for the field."""
    assert set(overrides) <= set(model.model_fields), overrides
    fields = []
    for name, info in model.model_fields.items():
        value = column = f"{row}.{name}"
        if name in overrides:
            value = overrides[name]
        elif name == "object":
            value = f"to_jsonb({_literal(info.default)}::text)"
        elif info.annotation in (float, float | None):
            whole = f"{column} = trunc({column}) AND abs({column}) < 1e16"
            value = (f"CASE WHEN {whole} THEN to_jsonb({column}::numeric(17, 1))"
                     f" ELSE to_jsonb({column}) END")  # fmt: skip
        fields.append(f"'{name}', {value}")
    return f"jsonb_build_object({', '.join(fields)})"


async def emit(
    conn: asyncpg.Connection,
    type_: str,
    thread_id: str,
    data: Any,
    cause: str | None,
    *,
    run_id: str | None = None,
) -> None:
    """Queue one `threadbus.events` event, keyed by thread id."""
    payload = event(type_, thread_id, data, cause, run_id=run_id)
    await enqueue(conn, topics.EVENTS, thread_id, payload)
