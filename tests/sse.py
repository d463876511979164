"""Reading server-sent events by hand, as a raw consumer (not the SDK) would."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    """One SSE event."""

    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        """The data as JSON."""
        return json.loads(self.data)


def events(lines: Iterator[str]) -> Iterator[Event]:
    """Parse SSE lines into events (comments and keep-alives skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "event" in fields or "data" in fields:
                yield Event(fields.get("id"), fields.get("event", ""), fields.get("data", ""))
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


def read_all(response: httpx.Response) -> list[Event]:
    """Every event of a streamed response, until it closes."""
    return list(events(response.iter_lines()))
