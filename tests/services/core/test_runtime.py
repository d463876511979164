"""Background loops: an unexpected error is logged and the loop goes on; a loop that dies
anyway makes its owner (and so the readiness probe) report it."""

import asyncio
import logging

import pytest

from services.core.runtime import TaskOwner, periodic


async def test_periodic_goes_on_after_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AssertionError("a bug in one pass")

    owner = TaskOwner()
    with caplog.at_level(logging.ERROR):
        owner.start(periodic(0.01, flaky, "flaky pass"), "flaky")
        await asyncio.sleep(0.2)
        assert owner.alive
        await owner.stop()
    assert calls > 2
    assert "flaky pass failed" in caplog.text
    assert "a bug in one pass" in caplog.text


async def test_a_dead_loop_makes_its_owner_not_alive() -> None:
    async def dies() -> None:
        raise RuntimeError("gone")

    async def lives() -> None:
        await asyncio.sleep(3600)

    owner = TaskOwner()
    owner.start(lives(), "lives")
    assert owner.alive
    owner.start(dies(), "dies")
    await asyncio.sleep(0.05)
    assert not owner.alive
    await owner.stop()
