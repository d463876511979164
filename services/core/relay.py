"""The outbox relay: publishes committed outbox rows to Kafka in id order, one relay active."""

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from schemas import topics
from services.core import db, metrics, tracing
from services.core.outbox import CHANNEL, DROPPED, OUTBOX_ID_HEADER, event

log = logging.getLogger(__name__)

_RELAY_LOCK = 7_411_002  # advisory lock key: one active relay, so order is the outbox's
_FIRST_CHOICE = 7_411_003  # held shared by every first-choice relay while it runs
HAND_OVER_CHECK_SECONDS = 5.0
"""How often an active relay that is not a first choice asks whether one is waiting."""
DEMOTED_SECONDS = 30.0
"""How long a first-choice relay that failed stands back (a broken producer, say), doubled for
each failure in a row up to `LONGEST_DEMOTION_SECONDS`: it would otherwise take the lock back
from a working stand-in and stall every event at each retry."""
LONGEST_DEMOTION_SECONDS = 600.0
_FIRST_CHOICE_RUNS = (
    "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ShareLock'"
    " AND l.classid = 0 AND l.objid = {key} AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND a.query_start > now() - interval '5 seconds')"
)
"""A first choice runs: a session holds the shared key (a bigint advisory key shows as classid,
its high half, objid, its low half, and objsubid 1) and sent a statement within 5 s, as a relay
that polls or relays does every second. A frozen or cut-off process whose session lingers does
not count, so it cannot keep every relay waiting."""
_TAKE = "SELECT pg_try_advisory_lock($1)"
_TAKE_UNLESS_FIRST_CHOICE = (
    "SELECT CASE WHEN NOT pg_try_advisory_lock($1) THEN false"
    " WHEN " + _FIRST_CHOICE_RUNS.format(key="$2") + " THEN NOT pg_advisory_unlock($1)"
    " ELSE true END"
)  # fmt: skip
"""Take the lock unless a first choice runs (then let it go again): the lock is tried first,
so while another relay holds it, as it almost always does, `pg_locks` is not read."""
_FIRST_CHOICE_WAITING = "SELECT " + _FIRST_CHOICE_RUNS.format(key="$1")
BATCH = 500

_READ = "SELECT id, topic, key, payload::text AS payload, trace, {starts} FROM outbox"
_STARTS = (
    "CASE WHEN topic = '" + topics.EVENTS + "' AND payload->>'type' = 'thread.run.created'"
    " THEN payload->'data'->>'id' END AS run_started"
)
_NEXT = _READ.format(starts=_STARTS) + " ORDER BY id LIMIT $1"
_SETTLE = (
    "WITH gone AS (DELETE FROM outbox WHERE id = ANY($1::bigint[])),"
    " started AS (INSERT INTO run_streams (run_id, start)"
    "  SELECT s.run_id, s.start FROM unnest($2::text[], $3::text[]) AS s(run_id, start)"
    "  WHERE EXISTS (SELECT 1 FROM runs WHERE id = s.run_id) ON CONFLICT DO NOTHING)"
)
_SETTLE_AND_NEXT = (
    _SETTLE + " " + _READ.format(starts=_STARTS) + " WHERE id <> ALL($1::bigint[])"
    " ORDER BY id LIMIT $4"
)
_SETTLE_ALONE = _SETTLE + " SELECT 1"
_MAY_VACUUM = "SELECT has_table_privilege('outbox', 'MAINTAIN')"
"""Superusers, the owner and roles granted `MAINTAIN` may: anyone else's `VACUUM` would only
put a warning in the server's log, every second."""
_OWNS_OUTBOX = (
    "SELECT pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'outbox'::regclass), 'USAGE')"
)
"""Before PostgreSQL 17 there is no `MAINTAIN` to ask about (asking is an error): ownership
decides (superusers count as owners)."""
MAINTAIN_SINCE = 17
"""The PostgreSQL major version that has the `MAINTAIN` privilege."""
_VACUUM = "VACUUM (SKIP_LOCKED, TRUNCATE false{more}) outbox"
"""Clear the rows the relay deleted. `SKIP_LOCKED`: not while autovacuum works on it;
`TRUNCATE false`: shrinking the file takes a lock that would stop every writer for a moment;
`SKIP_DATABASE_STATS` (PostgreSQL 16+, added where the server has it): the database-wide
statistics every `VACUUM` updates scan all of `pg_class` under a lock, and autovacuum keeps
them anyway."""
VACUUM_TIMEOUT_SECONDS = 2.0
"""A `VACUUM` can wait for a page another session has pinned; the relay's events may not."""
VACUUM_SECONDS = 1.0
"""How often an active relay that deleted rows vacuums the outbox (ARCHITECTURE.md, "The
outbox is a queue")."""
VACUUM_REFUSED_SECONDS = 60.0
"""How long a relay waits before vacuuming again after Postgres refused it or it took too long."""
SETTLE_SECONDS = 0.1
"""How long sent rows may wait to be deleted by the statement that reads the next batch; after
that they are deleted alone. Until deleted they count in the outbox's backlog."""


class Relay:
    """Publishes outbox rows to Kafka in id order, then deletes them.

    Every process that writes the outbox runs one; an advisory lock makes one of them active,
    so records leave in commit order. LISTEN/NOTIFY wakes it after a commit: at once when it
    last read longer than `gather_seconds` ago, else once that long has passed, so a busy
    relay's reads and produce requests carry several commits; a timer catches anything a
    crash left behind.

    A `first_choice` relay (the run-poller's, whose transactions write most of a run's events)
    is preferred: the others take the lock only while no first choice runs, and an active one
    that is not a first choice hands over (settles, lets go) when it finds one waiting, within
    `HAND_OVER_CHECK_SECONDS`. A relay in a process that is awake anyway costs less than one in
    a process that wakes for nothing else (ARCHITECTURE.md, "The relay runs in a run-poller").

    One statement per batch: it deletes what the broker took from the batch before (and
    records where runs' events begin) and reads the next. A batch shorter than the limit means
    the outbox was empty at that moment; the relay then waits for a notification instead of
    asking again (a commit after the read notifies after it).
    """

    def __init__(
        self,
        dsn: str,
        producer: AIOKafkaProducer,
        *,
        idle_seconds: float = 1.0,
        role: str = "relay",
        first_choice: bool = False,
        gather_seconds: float = 0.0,
    ):
        self._dsn = dsn
        self._gather = gather_seconds
        self._drained_at = -math.inf
        self._role = role
        self._producer = producer
        self._idle = idle_seconds
        self._first_choice = first_choice
        self._demoted_until = 0.0
        self._failures = 0
        self._wake = asyncio.Event()
        self._sent: list[int] = []
        self._starts: list[tuple[str, str]] = []
        self._deleted = 0
        """Rows deleted since the outbox was last vacuumed."""
        self._may_vacuum = False
        self._vacuum = _VACUUM.format(more="")
        self._vacuum_after = 0.0
        self.alive = True

    async def run(self) -> None:
        """Run until cancelled; reconnects after any failure (nothing may stop the relay)."""
        try:
            while True:
                try:
                    await self._lead()
                except asyncio.CancelledError:
                    raise
                except (*db.ERRORS, KafkaError) as exc:
                    log.warning("outbox relay: %s; retrying in 1 s", exc)
                    self._stand_back()
                except Exception:
                    # The relay is what makes every committed event leave: an unexpected
                    # error is logged with its traceback and the relay starts over.
                    log.exception("outbox relay failed; retrying in 1 s")
                    self._stand_back()
                await asyncio.sleep(1.0)
        finally:
            self.alive = False

    def _stand_back(self) -> None:
        """After a failure a first choice leads only as any other relay would, for a while."""
        self._failures += 1
        seconds = DEMOTED_SECONDS * 2 ** min(self._failures - 1, 10)
        self._demoted_until = time.monotonic() + min(seconds, LONGEST_DEMOTION_SECONDS)

    async def _lead(self) -> None:
        conn = await db.connect(self._dsn, role=self._role)
        try:
            first = await self._take(conn)
            await conn.add_listener(CHANNEL, self._on_notify)
            log.info("outbox relay active")
            await self._plan_vacuum(conn)
            asked = time.monotonic()
            while True:
                self._wake.clear()
                self._drained_at = time.monotonic()
                drained = await self._drain(conn)
                await self._tidy(conn)
                if drained == BATCH:
                    continue  # more is waiting
                if self._sent and not await self._woken(SETTLE_SECONDS):
                    await self._settle(conn)
                if not first and self._may_lead_first():
                    await self._announce(conn)  # stood back long enough: leads as one
                    first = True
                if not first and time.monotonic() - asked >= HAND_OVER_CHECK_SECONDS:
                    asked = time.monotonic()
                    if await conn.fetchval(_FIRST_CHOICE_WAITING, _FIRST_CHOICE):
                        await self._settle(conn)
                        log.info("outbox relay: handing over to a first-choice relay")
                        return  # closed below: the lock goes with the session
                if not self._wake.is_set():
                    await self._woken(self._idle)
        finally:
            # Rows sent and not deleted would be sent again by the next relay (consumers
            # are idempotent, but a clean stop should not repeat anything).
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(self._settle(conn), 2))
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    async def _take(self, conn: asyncpg.Connection) -> bool:
        """Poll until this relay holds the lock; whether it holds it as a first choice.

        A first choice says so (the shared key) unless it failed lately; the others take the
        lock only while no first choice runs.
        """
        announced = False
        while True:
            if not announced and self._may_lead_first():
                await self._announce(conn)
                announced = True
            if announced:
                took = await conn.fetchval(_TAKE, _RELAY_LOCK)
            else:
                took = await conn.fetchval(_TAKE_UNLESS_FIRST_CHOICE, _RELAY_LOCK, _FIRST_CHOICE)
            if took:
                return announced
            await asyncio.sleep(self._idle)

    def _may_lead_first(self) -> bool:
        return self._first_choice and time.monotonic() >= self._demoted_until

    async def _announce(self, conn: asyncpg.Connection) -> None:
        """Hold the first choice's key (shared) for as long as the session lasts."""
        await conn.execute("SELECT pg_advisory_lock_shared($1)", _FIRST_CHOICE)

    async def _woken(self, seconds: float) -> bool:
        """Wait up to `seconds` for a notification; whether one came. One that came sooner
        than `gather_seconds` after the last read waits out the rest: under load each read
        and produce request carries the commits of that long, while an idle relay reads at
        once (ARCHITECTURE.md, "The relay gathers commits under load")."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        if self._wake.is_set():
            rest = self._drained_at + self._gather - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)
        return self._wake.is_set()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _settle(self, conn: asyncpg.Connection) -> None:
        """Delete the rows the broker took (and record run starts), in one statement."""
        if not self._sent:
            return
        await conn.execute(_SETTLE_ALONE, self._sent, *self._unzipped_starts())
        self._settled()

    def _settled(self) -> None:
        """The rows sent are deleted: forget them, and count them for the next vacuum."""
        self._deleted += len(self._sent)
        self._sent, self._starts = [], []

    async def _plan_vacuum(self, conn: asyncpg.Connection) -> None:
        """Whether this session may vacuum the outbox, and the statement this server takes."""
        major = conn.get_server_version().major
        may = _MAY_VACUUM if major >= MAINTAIN_SINCE else _OWNS_OUTBOX
        self._may_vacuum = bool(await conn.fetchval(may))
        self._vacuum = _VACUUM.format(more=", SKIP_DATABASE_STATS" if major >= 16 else "")
        if not self._may_vacuum:
            log.info("outbox relay: may not vacuum the outbox; autovacuum alone will")

    async def _tidy(self, conn: asyncpg.Connection) -> None:
        """Vacuum the outbox if this relay deleted rows and has not vacuumed lately.

        The outbox is a queue: every row is inserted once and deleted once, and each read
        starts from its lowest id, so it walks over every row deleted since the last vacuum.
        Autovacuum looks at a table at most once a minute (`autovacuum_naptime`), by which time
        a busy system has deleted tens of thousands of rows.
        """
        if not (self._may_vacuum and self._deleted) or time.monotonic() < self._vacuum_after:
            return
        try:
            await conn.execute(self._vacuum, timeout=VACUUM_TIMEOUT_SECONDS)
        except (asyncpg.PostgresError, TimeoutError) as exc:  # refused, or slow: relay on
            log.warning("outbox relay: could not vacuum the outbox: %r", exc)
            self._vacuum_after = time.monotonic() + VACUUM_REFUSED_SECONDS
            return
        self._deleted = 0
        self._vacuum_after = time.monotonic() + VACUUM_SECONDS

    def _unzipped_starts(self) -> tuple[list[str], list[str]]:
        return [r for r, _ in self._starts], [s for _, s in self._starts]

    async def _drain(self, conn: asyncpg.Connection) -> int:
        """Settle the last batch and read the next; send it. A failed send is retried alone,
        later.

        A record the broker will never take (too large) must not block every event behind it:
        it is kept in `outbox_dead`, and a small `threadbus.event.dropped` event takes its
        place, so a stream waiting for it ends with an error instead of waiting forever.
        """
        if self._sent:
            rows = await conn.fetch(_SETTLE_AND_NEXT, self._sent, *self._unzipped_starts(), BATCH)
            self._settled()
        else:
            rows = await conn.fetch(_NEXT, BATCH)
        if not rows:
            return 0
        pending: list[asyncio.Future[Any] | BaseException] = []
        for row in rows:
            try:
                pending.append(await self._send_raw(
                    row["topic"], row["key"], row["payload"].encode(), row["id"], row["trace"]
                ))  # fmt: skip
            except MessageSizeTooLargeError as exc:
                pending.append(exc)
        results = await asyncio.gather(*map(_outcome, pending))
        failure: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, MessageSizeTooLargeError):
                await self._drop(conn, row)
            elif isinstance(result, BaseException):
                failure = failure or result
                continue
            elif row["run_started"] is not None:
                self._starts.append((row["run_started"], f"{result.partition}-{result.offset}"))
            self._sent.append(row["id"])
        metrics.OUTBOX_PUBLISHED.inc(len(self._sent))
        if failure is not None:
            await self._settle(conn)
            raise failure  # after a pause, the relay sends what is left, in order
        self._failures = 0  # a batch went out: the next failure is not one in a row
        return len(rows)

    async def _send(
        self, topic: str, key: str | None, payload: Any, outbox_id: int, trace: str | None = None
    ) -> "asyncio.Future[Any]":
        value = json.dumps(payload, ensure_ascii=False).encode()
        return await self._send_raw(topic, key, value, outbox_id, trace)

    async def _send_raw(
        self, topic: str, key: str | None, value: bytes, outbox_id: int, trace: str | None
    ) -> "asyncio.Future[Any]":
        headers = [
            ("content-type", b"application/json"),
            (OUTBOX_ID_HEADER, str(outbox_id).encode()),
        ]
        if trace:
            headers.append((tracing.HEADER, trace.encode()))
        return await self._producer.send(  # type: ignore[no-any-return]
            topic,
            value,
            key=key.encode() if key is not None else None,
            headers=headers,
        )

    async def _drop(self, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
        payload = json.loads(row["payload"])
        kind = payload.get("type") if isinstance(payload, dict) else None
        log.error("outbox row %s (%s) is too large for the broker; moved to outbox_dead",
                  row["id"], kind)  # fmt: skip
        await conn.execute(
            "INSERT INTO outbox_dead (id, topic, key, payload, reason)"
            " VALUES ($1, $2, $3, $4, 'message too large') ON CONFLICT DO NOTHING",
            row["id"], row["topic"], row["key"], payload,
        )  # fmt: skip
        if row["topic"] != topics.EVENTS or not isinstance(payload, dict):
            return
        dropped = {
            "event_id": payload.get("id"),
            "type": kind,
            "reason": "too large for the broker",
        }
        marker = event(
            DROPPED, payload.get("subject") or "", dropped, payload.get("causationid"),
            run_id=payload.get("runid"),
        )  # fmt: skip
        await (await self._send(row["topic"], row["key"], marker, row["id"]))


async def _outcome(sent: "asyncio.Future[Any] | BaseException") -> Any:
    """What became of one send: its record metadata, or the error."""
    if isinstance(sent, BaseException):
        return sent
    try:
        return await sent
    except Exception as exc:
        return exc
