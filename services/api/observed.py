"""What the API adds to its `/metrics`: every request measured and traced (`Observe`), and the
system-wide gauges, sampled from Postgres and the broker when Prometheus scrapes (`Sampler`).

Every API replica reports the same system-wide values; alert on `max` of them.
"""

import asyncio
import logging
import time

from aiokafka.errors import KafkaError
from fastapi import Request
from fastapi.responses import Response
from opentelemetry.trace import SpanKind
from prometheus_client import Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core import db, metrics, ops, tracing
from services.core.runtime import LIVE_SECONDS, Runtime

log = logging.getLogger(__name__)

RUNS = Gauge("threadbus_runs", "Runs in each unfinished status, system-wide.", ["status"])
RUN_OLDEST = Gauge(
    "threadbus_run_oldest_age_seconds",
    "Time since the oldest run in each unfinished status last changed (a stuck run grows it).",
    ["status"],
)
OUTBOX_BACKLOG = Gauge("threadbus_outbox_backlog_records", "Outbox rows not yet relayed.")
OUTBOX_OLDEST = Gauge(
    "threadbus_outbox_oldest_age_seconds", "Age of the oldest outbox row not yet relayed."
)
OUTBOX_DEAD = Gauge(
    "threadbus_outbox_dead_records", "Outbox rows the broker refused (outbox_dead)."
)
INGESTION_QUEUE = Gauge(
    "threadbus_ingestion_queue_files", "Files waiting for the file-indexer or being indexed."
)
WORKERS = Gauge(
    "threadbus_workers", "Processes of each service that heartbeat (live, 10 s).", ["service"]
)
CONSUMER_LAG = Gauge(
    "threadbus_consumer_lag_records",
    "Records each consumer group has yet to read (committed offsets against the ends).",
    ["group"],
)
DLQ_SIZE = Gauge("threadbus_dlq_records", "Records on threadbus.dlq (its retained size).")
UP = Gauge(
    "threadbus_sample_up",
    "Whether the last sample of Postgres or of the broker for these gauges succeeded.",
    ["source"],
)

UNFINISHED = ("queued", "in_progress", "requires_action", "cancelling")
BROKER_SECONDS = 4.0
"""How long a scrape waits for the broker's offsets: with the broker away, the scrape must
still answer within Prometheus' timeout (10 s here), or `threadbus_sample_up` is lost with the
rest."""
METHODS = frozenset({"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"})


class Sampler:
    """Refreshes the system-wide gauges at most every `ttl` seconds, when scraped."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._ttl = ttl
        self._at = -ttl
        self._lock = asyncio.Lock()

    async def refresh(self, runtime: Runtime) -> None:
        """Sample Postgres and the broker, unless another scrape did in the last `ttl`."""
        async with self._lock:
            if time.monotonic() - self._at < self._ttl:
                return
            self._at = time.monotonic()
            await self._postgres(runtime)
            await self._broker(runtime)

    async def _postgres(self, runtime: Runtime) -> None:
        try:
            async with runtime.pool.acquire(timeout=2) as conn:
                runs = await conn.fetch(
                    "SELECT status, count(*) AS n,"
                    " extract(epoch FROM now() - min(updated_at)) AS oldest FROM runs"
                    " WHERE status = ANY($1::text[]) GROUP BY status",
                    list(UNFINISHED),
                )
                outbox = await conn.fetchrow(
                    "SELECT count(*) AS n,"
                    " coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest,"
                    " (SELECT count(*) FROM outbox_dead) AS dead,"
                    " (SELECT count(*) FROM vector_store_files WHERE status = 'in_progress')"
                    " AS ingesting FROM outbox"
                )
                live = await conn.fetch(
                    "SELECT service, count(*) AS n FROM workers"
                    " WHERE heartbeat_at > now() - make_interval(secs => $1) GROUP BY service",
                    LIVE_SECONDS,
                )
        except db.ERRORS as exc:
            log.warning("sampling Postgres for /metrics failed: %s", exc)
            UP.labels("postgres").set(0)
            return
        found = {row["status"]: row for row in runs}
        for status in UNFINISHED:
            row = found.get(status)
            RUNS.labels(status).set(row["n"] if row else 0)
            RUN_OLDEST.labels(status).set(float(row["oldest"]) if row else 0.0)
        OUTBOX_BACKLOG.set(outbox["n"])
        OUTBOX_OLDEST.set(float(outbox["oldest"]))
        OUTBOX_DEAD.set(outbox["dead"])
        INGESTION_QUEUE.set(outbox["ingesting"])
        counted = {row["service"]: row["n"] for row in live}
        for service in ops.SERVICES:
            WORKERS.labels(service).set(counted.get(service, 0))
        UP.labels("postgres").set(1)

    async def _broker(self, runtime: Runtime) -> None:
        try:
            lag, dlq = await asyncio.wait_for(
                ops.broker_view(runtime.settings.kafka_bootstrap_servers), BROKER_SECONDS
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            log.warning("sampling the broker for /metrics failed: %s", exc)
            UP.labels("broker").set(0)
            return
        for group, behind in lag.items():
            CONSUMER_LAG.labels(group).set(behind)
        DLQ_SIZE.set(dlq)
        UP.labels("broker").set(1)


SAMPLER = Sampler()


async def metrics_endpoint(request: Request) -> Response:
    """`GET /metrics`: this process's metrics and the system-wide gauges."""
    await SAMPLER.refresh(request.app.state.runtime)
    body, kind = metrics.exposition()
    return Response(body, media_type=kind)


class Observe:
    """Times every HTTP request by route template and status; traces it when tracing is on
    (continuing the caller's `traceparent`). Plain ASGI, like `Door`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        began = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "other"

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        parent = None
        if tracing.ENABLED:
            parent = dict(scope["headers"]).get(tracing.HEADER.encode(), b"").decode() or None
        with tracing.span(f"{method} {scope['path']}", parent=parent,
                          kind=SpanKind.SERVER) as span:  # fmt: skip
            try:
                await self.app(scope, receive, seen)
            finally:
                template = _template(scope)
                metrics.HTTP_REQUEST.labels(method, template, str(status)).observe(
                    time.perf_counter() - began
                )
                if span is not None:
                    span.update_name(f"{method} {template}")
                    span.set_attributes({"http.request.method": method,
                                         "http.route": template,
                                         "http.response.status_code": status})  # fmt: skip


def _template(scope: Scope) -> str:
    """The route the request matched, its parameters named (`/v1/threads/{thread_id}/runs`),
    or `unmatched`: from the path and the matched parameters, which every FastAPI version sets
    (the matched route's own `path` lacks the prefixes of the routers it was included in)."""
    if "route" not in scope:
        return "unmatched"
    names = {str(v): k for k, v in scope.get("path_params", {}).items()}
    return "/".join(f"{{{names[s]}}}" if s in names else s for s in scope["path"].split("/"))
