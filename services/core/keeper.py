"""How `threadbus up` keeps its services running, and stops them in bounded time."""

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.core.supervisor import ServiceProcess

log = logging.getLogger("threadbus.up")

BACKOFF_SECONDS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""The wait before restarting a service, by how many times it exited in `CRASH_WINDOW`."""
CRASH_WINDOW = 60.0
CRASHING = 3
"""This many exits in the window and the service is reported as crashing, loudly."""
STOP_SECONDS = 25.0
"""How long `up` waits for its services to stop after SIGTERM before it kills them (each one's
own grace is shorter: 10 to 15 s), so a stop is bounded even when the broker is gone."""


class Keeper:
    """Restarts services that exit, backing off from one that keeps exiting."""

    def __init__(
        self, children: Sequence["ServiceProcess"], clock: Callable[[], float] = time.monotonic
    ):
        self._children = children
        self._clock = clock
        self._exits: dict[int, deque[float]] = {}
        self._due: dict[int, float] = {}

    def tend(self) -> None:
        """Notice exits and restart what is due; call it every fraction of a second."""
        now = self._clock()
        for index, child in enumerate(self._children):
            if child.alive:
                continue
            if index in self._due:
                if now >= self._due[index]:
                    del self._due[index]
                    child.start()
                continue
            self._due[index] = now + self._noted_exit(index, child, now)

    def _noted_exit(self, index: int, child: "ServiceProcess", now: float) -> float:
        """Log the exit; returns how long to wait before the restart."""
        exits = self._exits.setdefault(index, deque())
        exits.append(now)
        while exits and exits[0] < now - CRASH_WINDOW:
            exits.popleft()
        delay = BACKOFF_SECONDS[min(len(exits), len(BACKOFF_SECONDS)) - 1]
        status = child.proc.returncode if child.proc is not None else None
        if len(exits) >= CRASHING:
            log.error(
                "%s keeps crashing: exit status %s, %d times in the last %.0f s; restarting it"
                " in %.0f s (its last lines are above)",
                child.name, status, len(exits), CRASH_WINDOW, delay,
            )  # fmt: skip
        else:
            log.warning("%s exited with status %s; restarting it", child.name, status)
        return delay


def stop_all(children: Sequence["ServiceProcess"], timeout: float) -> None:
    """SIGTERM every live service at once, then SIGKILL whatever is still up after `timeout`."""
    live = [child for child in children if child.alive]
    for child in live:
        assert child.proc is not None
        child.proc.terminate()
    deadline = time.monotonic() + timeout
    while any(child.alive for child in live) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child in live:
        if child.alive:
            log.warning("%s did not stop in %.0f s; killing it", child.name, timeout)
            child.kill()
