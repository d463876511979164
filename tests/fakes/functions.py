"""Server-side functions the tests register with the tool-executor."""

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from services.tool_executor.registry import ToolCall


def add_numbers(arguments: dict[str, Any], call: ToolCall) -> dict[str, Any]:
    """Registered as an entry point (see plugin_site/): sync, returns JSON."""
    return {"sum": arguments["a"] + arguments["b"], "tool_call_id": call.tool_call_id}


async def lookup_weather(arguments: dict[str, Any], _call: ToolCall) -> str:
    """Async, returns text."""
    return f"18C and sunny in {arguments['city']}"


def slow_echo(arguments: dict[str, Any], call: ToolCall) -> str:
    """Takes a while and logs each call with the executor's pid (for the scaling test)."""
    time.sleep(float(arguments.get("seconds", 0.5)))
    log = os.environ.get("THREADBUS_TEST_CALL_LOG")
    if log:
        with Path(log).open("a") as out:
            out.write(f"{call.tool_call_id} {os.getpid()}\n")
    return json.dumps({"echo": arguments.get("text"), "pid": os.getpid()})


def explode(_arguments: dict[str, Any], _call: ToolCall) -> str:
    """Raises."""
    raise ValueError("the flux capacitor is empty")


async def dawdle(_arguments: dict[str, Any], _call: ToolCall) -> str:
    """Never answers in time."""
    await asyncio.sleep(60)
    return "too late"


dawdle.threadbus_timeout = 0.5  # type: ignore[attr-defined]


def garbage(_arguments: dict[str, Any], _call: ToolCall) -> object:
    """Returns something that is neither text nor JSON."""
    return object()


def record_start(arguments: dict[str, Any], call: ToolCall) -> str:
    """Notes each start with its idempotency key and pid, then takes `seconds` to answer."""
    log = os.environ.get("THREADBUS_TEST_CALL_LOG")
    if log:
        with Path(f"{log}.starts").open("a") as out:
            out.write(f"{call.idempotency_key} {os.getpid()}\n")
    time.sleep(float(arguments.get("seconds", 0)))
    return f"started once as {call.idempotency_key}"
