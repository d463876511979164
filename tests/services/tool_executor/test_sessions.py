"""The code-interpreter sessions of one executor, with real sandboxes: idle expiry, room,
spares, and a kernel that died."""

import asyncio
import sys
import time

import pytest

from services.tool_executor.bwrap import Limits
from services.tool_executor.sessions import Sessions

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="bubblewrap is Linux-only")


def sessions(**options: float) -> Sessions:
    settings = {"idle_seconds": 3600.0, "max_kernels": 8, "spares": 0, **options}
    return Sessions(
        sys.executable,
        Limits(),
        idle_seconds=float(settings["idle_seconds"]),
        max_kernels=int(settings["max_kernels"]),
        spares=int(settings["spares"]),
    )


async def test_a_thread_keeps_its_kernel_and_threads_do_not_share() -> None:
    pool = sessions()
    try:
        first, fresh = await pool.get("thread_a")
        assert fresh
        await first.execute("x = 'a'", seconds=10)
        again, fresh = await pool.get("thread_a")
        assert again is first
        assert not fresh
        other, fresh = await pool.get("thread_b")
        assert fresh
        assert other is not first
        result = await other.execute("print('x' in dir())", seconds=10)
        assert result.logs == "False\n"
    finally:
        await pool.close()


async def test_an_idle_session_ends_and_the_next_call_starts_anew() -> None:
    pool = sessions(idle_seconds=0.5)
    try:
        sandbox, _ = await pool.get("thread_a")
        await sandbox.execute("x = 1", seconds=10)
        await asyncio.sleep(0.7)
        await pool.sweep()
        assert pool.count == 0
        assert not sandbox.alive
        renewed, fresh = await pool.get("thread_a")
        assert fresh
        result = await renewed.execute("print('x' in dir())", seconds=10)
        assert result.logs == "False\n"
    finally:
        await pool.close()


async def test_the_least_recently_used_session_makes_room() -> None:
    pool = sessions(max_kernels=2)
    try:
        a, _ = await pool.get("thread_a")
        b, _ = await pool.get("thread_b")
        await a.execute("pass", seconds=10)  # b is now the least recently used
        await pool.get("thread_c")
        assert pool.count == 2
        assert a.alive
        assert not b.alive
    finally:
        await pool.close()


async def test_a_spare_is_ready_for_the_first_call() -> None:
    pool = sessions(spares=1)
    try:
        pool.top_up()
        deadline = time.monotonic() + 30
        while not pool._spares:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        started = time.monotonic()
        sandbox, fresh = await pool.get("thread_a")
        assert fresh
        assert time.monotonic() - started < 0.2  # no kernel to boot
        result = await sandbox.execute("print(6 * 7)", seconds=10)
        assert result.logs == "42\n"
    finally:
        await pool.close()


async def test_a_dead_kernel_is_replaced() -> None:
    pool = sessions()
    try:
        sandbox, _ = await pool.get("thread_a")
        result = await sandbox.execute("import os\nos._exit(1)", seconds=10)
        assert result.lost
        replaced, fresh = await pool.get("thread_a")
        assert fresh
        assert replaced is not sandbox
        assert (await replaced.execute("print(1)", seconds=10)).logs == "1\n"
    finally:
        await pool.close()
