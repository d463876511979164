"""OpenTelemetry traces that follow a run: HTTP, Kafka record headers, Postgres rows, the model.

Off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the SDK's own variables, as are `OTEL_SERVICE_NAME`,
`OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_HEADERS`). Off, the SDK is never imported and every helper
here returns at its first line: no span objects, no header parsing, no extra column values.

How a run's trace is carried, hop by hop:
- HTTP: the API continues a caller's `traceparent` (W3C) and opens a server span per request.
- Kafka: every record the outbox relay sends carries the `traceparent` of the span that wrote
  the outbox row (`outbox.trace`); consumers continue it (`span_from`).
- Postgres: a run remembers the context it was created in (`runs.trace`). The run-poller's
  turns, which start from a NOTIFY and not from a record, continue it, so every turn of a run
  and the tool calls between them are one trace.
- The model: the Chat Completions request carries the model span's `traceparent`.
"""

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace

ENABLED = (
    bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
)
"""Whether this process exports traces (read once, at import)."""

HEADER = "traceparent"
BATCH_LINKS = 500
"""Links a span keeps (`OTEL_SPAN_LINK_COUNT_LIMIT` overrides): as many as the largest batch a
consumer takes (the archiver's, 500 records), so a batch's span links every trace it carries;
the SDK's default, 128, dropped the rest."""
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None


def configure(service: str) -> None:
    """Install the SDK's tracer provider with a batching OTLP/HTTP exporter, when enabled."""
    global _tracer, _provider
    if not ENABLED or _provider is not None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"threadbus-{service}"
    links = int(os.environ.get("OTEL_SPAN_LINK_COUNT_LIMIT") or BATCH_LINKS)
    _provider = TracerProvider(
        resource=Resource.create({"service.name": name}), span_limits=SpanLimits(max_links=links)
    )
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("threadbus")


def shutdown() -> None:
    """Export what is buffered (at a graceful stop)."""
    if _provider is not None:
        _provider.shutdown()


def current() -> str | None:
    """The current span's `traceparent`, to store with a row or send on; None when off."""
    if not ENABLED:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(HEADER)


def http_headers() -> dict[str, str] | None:
    """Headers that continue the current trace in an outgoing HTTP request; None when off."""
    parent = current()
    return {HEADER: parent} if parent else None


def _parent(traceparent: str | None) -> context.Context | None:
    return propagate.extract({HEADER: traceparent}) if traceparent else None


def from_headers(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The `traceparent` a Kafka record carries, if any (only read when enabled)."""
    if not ENABLED:
        return None
    for name, value in headers or ():
        if name == HEADER and value:
            return value.decode("ascii", errors="replace")
    return None


@contextmanager
def span(
    name: str,
    *,
    parent: str | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span | None]:
    """A span (a child of `parent` when given, else of the current one), current inside;
    yields None when tracing is off. An exception that escapes is recorded on it."""
    if not ENABLED:
        yield None
        return
    with _tracer.start_as_current_span(
        name, context=_parent(parent), kind=kind, attributes=dict(attributes or {})
    ) as opened:
        yield opened


def consumer_span(topic: str, headers: Sequence[tuple[str, bytes]] | None) -> Any:
    """The span of handling one Kafka record, continuing the trace its producer sent."""
    if not ENABLED:
        return span("")
    return span(
        f"{topic} process",
        parent=from_headers(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
    )


def batch_span(topic: str, batch: Sequence[Sequence[tuple[str, bytes]] | None]) -> Any:
    """The span of handling a batch of records: a root of its own, linked once to each trace
    its records carried (a batch mixes many runs' events, a dozen or so of each run's trace;
    a span keeps 128 links, so one per record lost the traces of a large batch's later runs)."""
    if not ENABLED:
        return span("")
    links: dict[int, trace.Link] = {}
    for headers in batch:
        if (parent := from_headers(headers)) is not None:
            remote = trace.get_current_span(_parent(parent)).get_span_context()
            links.setdefault(remote.trace_id, trace.Link(remote))
    return _tracer.start_as_current_span(
        f"{topic} process", context=context.Context(), kind=trace.SpanKind.CONSUMER,
        links=list(links.values()), attributes={"messaging.system": "kafka",
                                 "messaging.destination.name": topic,
                                 "messaging.batch.message_count": len(batch)},
    )  # fmt: skip
