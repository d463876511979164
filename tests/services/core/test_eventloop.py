"""`eventloop.run` runs on uvloop unless `THREADBUS_EVENT_LOOP=asyncio` says otherwise."""

import os
import subprocess
import sys

import pytest

PROBE = (
    "import asyncio\n"
    "from services.core import eventloop\n"
    "async def kind():\n"
    "    return type(asyncio.get_running_loop()).__module__\n"
    "print(eventloop.run(kind()))\n"
)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, "uvloop"), ("asyncio", "asyncio.unix_events"), ("uvloop", "uvloop")],
)
def test_the_loop_a_process_runs_on(setting: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "THREADBUS_EVENT_LOOP"}
    if setting is not None:
        env["THREADBUS_EVENT_LOOP"] = setting
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
