"""Prometheus metrics of one process, served on the API's port and on each worker's probe port
(`GET /metrics`).

Counters and histograms count what this process did; Prometheus sums them over processes.
What belongs to the whole system (runs waiting, the outbox, consumer lag, the DLQ) is sampled
from Postgres and the broker by the API when it is scraped (`services/api/observed.py`).

No label takes an id: statuses, phases, routes and tool types are closed sets, and the two
that come from users (model names, function names) are capped by `Bounded`.
"""

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0)  # fmt: skip
"""Latency buckets: from a 5 ms hot-path step to a 10-minute tool call."""


class Bounded:
    """A label fed by users' names, capped at `limit` distinct values; later names count as
    `other`, so a client inventing names cannot grow the series without end."""

    def __init__(self, limit: int = 50) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        value = value or "unknown"
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return "other"


MODEL_NAMES = Bounded()

RUN_TRANSITIONS = Counter(
    "threadbus_run_transitions",
    "Runs that entered a status (counted when the change commits), by that status.",
    ["status"],
)
RUN_PHASE = Histogram(
    "threadbus_run_phase_seconds",
    "Time a run spent in one phase: queued (from queued to claimed), model (one model turn),"
    " tools (from waiting for tool outputs to running again), total (created to finished).",
    ["phase"],
    buckets=SECONDS,
)
MODEL_REQUEST = Histogram(
    "threadbus_model_request_duration_seconds",
    "One streamed Chat Completions request, retries included, by model and outcome.",
    ["model", "outcome"],
    buckets=SECONDS,
)
MODEL_TOKENS = Counter(
    "threadbus_model_tokens", "Tokens the model endpoint reported, by model and type.",
    ["model", "type"],
)  # fmt: skip
MODEL_ERRORS = Counter(
    "threadbus_model_errors",
    "Model requests that failed (after retries) or were retried, by model and error code.",
    ["model", "code"],
)
TOOL_CALL = Histogram(
    "threadbus_tool_call_duration_seconds",
    "Server-side tool calls the tool-executor ran, by tool type and function.",
    ["tool", "function"],
    buckets=SECONDS,
)
TOOL_FAILURES = Counter(
    "threadbus_tool_call_failures",
    "Server-side tool calls whose output is an error, by tool type and function.",
    ["tool", "function"],
)
OUTBOX_PUBLISHED = Counter(
    "threadbus_outbox_published_records", "Outbox rows this process's relay sent to the broker."
)
DEAD_LETTERS = Counter(
    "threadbus_dead_letters",
    "Records this process parked on threadbus.dlq, by consumer group.",
    ["group"],
)
ACTIVE_STREAMS = Gauge("threadbus_active_streams", "Server-sent event streams open on this API.")
SLEEPING_STREAMS = Gauge(
    "threadbus_sleeping_streams",
    "Open streams waiting for their thread's next commit, not fetching from the broker.",
)
STREAM_WAKES = Counter(
    "threadbus_stream_wakes",
    "Times a sleeping stream woke: rung by a commit of its thread's events, or to look.",
    ["by"],
)
HTTP_REQUEST = Histogram(
    "threadbus_http_request_duration_seconds",
    "HTTP requests the API answered (a stream lasts until it ends), by route template and"
    " status code.",
    ["method", "route", "status"],
    buckets=SECONDS,
)
FILES_INDEXED = Counter(
    "threadbus_files_indexed", "Files the file-indexer finished, by outcome.", ["outcome"]
)
SANDBOX_KERNELS = Gauge(
    "threadbus_sandbox_kernels", "Code-interpreter kernels alive in this tool-executor."
)


def exposition() -> tuple[bytes, str]:
    """This process's metrics in the text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
