"""One log format for every process: readable lines by default, JSON lines when asked
(`THREADBUS_LOG_FORMAT=json`, for log shippers); never ANSI colour codes.

Both carry `run_id` and `thread_id` when a line is about a run or a thread: from the context
of the task that logs (`about`, set where a run is driven), else from the ids the message
names (`run_...`, `thread_...`).
"""

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

_ABOUT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "threadbus_log_about", default=None
)
_ID_PREFIXES = {"run_": "run_id", "thread_": "thread_id"}
_FOREIGN = ("faststream", "uvicorn", "uvicorn.error", "uvicorn.access")
"""Loggers that bring their own handlers (FastStream's always colours its lines): theirs are
removed, and their records go through the root's."""


@contextmanager
def about(**ids: str) -> Iterator[None]:
    """Lines logged inside (by this task and the tasks it starts) carry these ids."""
    token = _ABOUT.set({**(_ABOUT.get() or {}), **ids})
    try:
        yield
    finally:
        _ABOUT.reset(token)


def bind(**ids: str) -> None:
    """For the rest of the current task (and the tasks it starts), lines carry these ids."""
    _ABOUT.set({**(_ABOUT.get() or {}), **ids})


def ids_of(record: logging.LogRecord) -> dict[str, str]:
    """The run and thread a record is about: the task's context first, then its arguments."""
    found = dict(_ABOUT.get() or {})
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        if not isinstance(arg, str):
            continue
        for prefix, field in _ID_PREFIXES.items():
            if arg.startswith(prefix) and field not in found:
                found[field] = arg
    return found


class TextFormatter(logging.Formatter):
    """`time LEVEL service logger: message [run_id=... thread_id=...]`."""

    def __init__(self, service: str):
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = ids_of(record)
        if ids:
            tail = " ".join(f"{key}={value}" for key, value in sorted(ids.items()))
            first, newline, rest = line.partition("\n")
            line = f"{first} [{tail}]{newline}{rest}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, the ids, and the
    exception's traceback as one string when there is one."""

    def __init__(self, service: str):
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            **ids_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(service: str, level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Route every logger of the process to one stderr handler in the chosen format."""
    handler = logging.StreamHandler()
    formatter = JsonFormatter(service) if fmt == "json" else TextFormatter(service)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in _FOREIGN:
        foreign = logging.getLogger(name)
        for old in list(foreign.handlers):
            foreign.removeHandler(old)
        foreign.propagate = True
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # Group membership at INFO (unless the process logs less): joins with their generations and
    # the partitions revoked, a few lines a rebalance, tell a slow rebalance apart.
    membership = logging.getLogger("aiokafka.consumer.group_coordinator")
    membership.setLevel(max(logging.INFO, logging.getLogger().level))
    if _not_a_rebalance not in membership.filters:
        membership.addFilter(_not_a_rebalance)


def _not_a_rebalance(record: logging.LogRecord) -> bool:
    """Drop "Discovered coordinator" below WARNING: every short-lived consumer that reads a
    group's offsets (the API's lag gauge, each scrape) logs it; a lost coordinator is a
    warning of its own."""
    return record.levelno >= logging.WARNING or not str(record.msg).startswith("Discovered")
