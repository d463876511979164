"""Rings a thread's open streams when its events commit, so they need not poll the broker.

Every commit that writes outbox rows notifies `threadbus_outbox` with `<thread id> <outbox
id>` for each thread whose events it wrote (the transaction's highest row of that thread;
migration 0013); the relay publishes those rows a few milliseconds later. A stream reader
that has every record it was rung for pauses its consumer (no fetches); a ring resumes it until
the rung record arrives. The broker is asked for records only when some are coming.

The bell listens only while this process has streams open (and LINGER_SECONDS after): an API
that streams nothing is not woken by every commit of the system.

A sleeping stream also looks once a second, for what no ring announced (a ring lost), and every
20 ms while rings may be missed: until the listener has been connected SETTLE_SECONDS (what
committed before it listened was never rung), and while it reconnects. That is as often as
streams polled before the bell.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg

from services.core import db
from services.core.outbox import CHANNEL

log = logging.getLogger(__name__)

ROLE = "api-bell"
"""The listener's connection is `threadbus api-bell <pid>` in `pg_stat_activity`."""


LINGER_SECONDS = 30.0
"""How long the bell goes on listening once no stream is open (streams come in bursts); an API
that streams nothing does not listen, and pays nothing for the notifications."""
SETTLE_SECONDS = 0.2
"""How long after the listener (re)connects streams still look every 20 ms: what was committed
before it listened was never rung, and the relay publishes it well within this."""


class Bell:
    """One per API process: who listens for which thread."""

    def __init__(self) -> None:
        self._since: float | None = None
        """When the listener last connected (None: not listening)."""
        self._listeners: dict[str, set[Callable[[int], None]]] = {}
        self._wanted = asyncio.Event()
        self._joins = 0
        self._stopping = False

    def trusted(self) -> bool:
        """Whether rings arrive, and have for SETTLE_SECONDS: only then may a stream sleep a
        whole second between looks (else it looks every 20 ms)."""
        return self._since is not None and time.monotonic() - self._since >= SETTLE_SECONDS

    async def listen(self, dsn: str) -> None:
        """Listen while streams are open, and LINGER_SECONDS after; until cancelled."""

        async def connected(_: asyncpg.Connection) -> None:
            self._since = time.monotonic()

        while True:
            await self._wanted.wait()
            listener = asyncio.create_task(db.listen(
                dsn, {CHANNEL: self._ring}, connected=connected, lost=self._lost, role=ROLE
            ))  # fmt: skip
            try:
                await self._until_unwanted()
            finally:
                self._stopping = True
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
                self._since, self._stopping = None, False

    async def _until_unwanted(self) -> None:
        """Return once no stream was open, or opened, for LINGER_SECONDS."""
        while True:
            joins = self._joins
            await asyncio.sleep(LINGER_SECONDS)
            if not self._listeners and self._joins == joins:
                self._wanted.clear()
                return

    def join(self, thread_id: str, listener: Callable[[int], None]) -> None:
        """Call `listener(outbox id)` for each ring of `thread_id`."""
        self._listeners.setdefault(thread_id, set()).add(listener)
        self._joins += 1
        self._wanted.set()

    def leave(self, thread_id: str, listener: Callable[[int], None]) -> None:
        """Stop ringing `listener`."""
        listeners = self._listeners.get(thread_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[thread_id]

    def _ring(self, payload: str) -> None:
        thread_id, _, outbox_id = payload.partition(" ")
        listeners = self._listeners.get(thread_id)
        if not listeners or not outbox_id.isdigit():
            return  # nobody streams that thread, or a ring for the relay alone ('')
        for listener in tuple(listeners):
            listener(int(outbox_id))

    def _lost(self) -> None:
        if self._since is not None and not self._stopping:
            log.info("stream bell: listener lost; streams look every 20 ms until it is back")
        self._since = None


BELL = Bell()
"""This process's bell (the API's lifespan runs `listen`)."""
