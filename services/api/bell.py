"""Rings a thread's open streams when its events commit, so they need not poll the broker.

Every commit that writes outbox rows notifies `threadbus_outbox` with `<thread id> <outbox
id>` for each thread whose events it wrote (the transaction's highest row of that thread;
migration 0013); the relay publishes those rows a few milliseconds later. A stream reader
that has every record it was rung for pauses its consumer (no fetches); a ring resumes it until
the rung record arrives. The broker is asked for records only when some are coming.

A sleeping stream also looks once a second, for what no ring announced (records committed
while the listener was away, a ring it lost), and every 20 ms while the listener is not
connected: as often as streams polled before the bell.
"""

import logging
from collections.abc import Callable

import asyncpg

from services.core import db

log = logging.getLogger(__name__)

CHANNEL = "threadbus_outbox"
ROLE = "api-bell"
"""The listener's connection is `threadbus api-bell <pid>` in `pg_stat_activity`."""


class Bell:
    """One per API process: who listens for which thread."""

    def __init__(self) -> None:
        self.live = False
        """Whether rings arrive (the listener is connected): else streams look every 20 ms."""
        self._listeners: dict[str, set[Callable[[int], None]]] = {}

    async def listen(self, dsn: str) -> None:
        """Listen until cancelled; reconnects after any loss."""

        async def connected(_: asyncpg.Connection) -> None:
            self.live = True

        try:
            await db.listen(
                dsn, {CHANNEL: self._ring}, connected=connected, lost=self._lost, role=ROLE
            )
        finally:
            self._lost()

    def join(self, thread_id: str, listener: Callable[[int], None]) -> None:
        """Call `listener(outbox id)` for each ring of `thread_id`."""
        self._listeners.setdefault(thread_id, set()).add(listener)

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
        if self.live:
            self.live = False
            log.info("stream bell: listener lost; streams look every 20 ms until it is back")


BELL = Bell()
"""This process's bell (the API's lifespan runs its listener)."""
