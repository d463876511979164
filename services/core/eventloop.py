"""The event loop of every long-running service: uvloop unless told otherwise.

Every run crosses several processes, and each crossing is socket work on some event loop
(Postgres statements, Kafka requests, HTTP). uvloop does that work in C (libuv) where asyncio's
selector loop does it in Python. `THREADBUS_EVENT_LOOP=asyncio` asks for asyncio's own loop
(to rule the loop out when chasing a bug); asyncio's is also used where uvloop is not installed.
"""

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def choice() -> Literal["uvloop", "asyncio"]:
    """The loop this process runs: uvloop when installed and not turned off."""
    if os.environ.get("THREADBUS_EVENT_LOOP", "uvloop").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on the chosen loop."""
    if choice() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
