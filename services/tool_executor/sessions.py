"""This executor's code-interpreter sessions: one sandboxed kernel per thread, plus warm spares.

A thread's calls arrive on one partition, so they reach the executor that holds its kernel.
A session ends after `idle_seconds` without a call, when the executor is at `max_kernels`
and needs room (the least recently used goes), or when its kernel dies; the next call then
starts a new one. Spare kernels are started ahead of need, so a thread's first call does not
wait for Python to boot.
"""

import asyncio
import contextlib
import logging
import time

from services.tool_executor.bwrap import Limits
from services.tool_executor.sandbox import Sandbox

log = logging.getLogger(__name__)


class Sessions:
    """Kernels by thread id."""

    def __init__(
        self,
        python: str,
        limits: Limits,
        *,
        idle_seconds: float,
        max_kernels: int,
        spares: int,
    ):
        self._python = python
        self._limits = limits
        self._idle_seconds = idle_seconds
        self._max_kernels = max_kernels
        self._spares_wanted = spares
        self._kernels: dict[str, Sandbox] = {}
        self._spares: list[Sandbox] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._refill: asyncio.Task[None] | None = None
        self._closed = False

    def lock(self, thread_id: str) -> asyncio.Lock:
        """Held while a call of this thread runs: one cell at a time per kernel."""
        return self._locks.setdefault(thread_id, asyncio.Lock())

    @property
    def count(self) -> int:
        """Kernels serving threads now."""
        return len(self._kernels)

    def kernels(self) -> list[Sandbox]:
        """The kernels serving threads now."""
        return list(self._kernels.values())

    async def get(self, thread_id: str) -> tuple[Sandbox, bool]:
        """The thread's kernel, and whether it is new (nothing of an earlier session in it)."""
        existing = self._kernels.get(thread_id)
        if existing is not None and existing.alive:
            return existing, False
        if existing is not None:
            await self.discard(thread_id)
        while len(self._kernels) >= self._max_kernels:
            oldest = min(self._kernels, key=lambda t: self._kernels[t].last_used)
            log.info("ending the session of thread %s to make room", oldest)
            await self.discard(oldest)
        sandbox = None
        while self._spares and sandbox is None:
            spare = self._spares.pop()
            if spare.alive:
                sandbox = spare
            else:
                await spare.close()
        if sandbox is None:
            sandbox = await Sandbox.start(self._python, self._limits)
        self._kernels[thread_id] = sandbox
        self.top_up()
        return sandbox, True

    async def discard(self, thread_id: str) -> None:
        """End the thread's session (its files stay recorded; its variables are gone)."""
        sandbox = self._kernels.pop(thread_id, None)
        if sandbox is not None:
            await sandbox.close()

    def top_up(self) -> None:
        """Start spares in the background until `spares` are ready."""
        if self._closed or self._spares_wanted == 0:
            return
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fill(), name="sandbox-spares")

    async def _fill(self) -> None:
        while not self._closed and len(self._spares) < self._spares_wanted:
            try:
                spare = await Sandbox.start(self._python, self._limits)
            except Exception as exc:
                log.warning("could not start a spare kernel: %s", exc)
                return
            if self._closed:
                await spare.close()
                return
            self._spares.append(spare)

    async def sweep(self) -> None:
        """End idle sessions and dead kernels; keep the spares topped up."""
        now = time.monotonic()
        for thread_id, sandbox in list(self._kernels.items()):
            idle = now - sandbox.last_used > self._idle_seconds
            if (idle or not sandbox.alive) and not self.lock(thread_id).locked():
                log.info("ending the session of thread %s (%s)",
                         thread_id, "idle" if idle else "kernel gone")  # fmt: skip
                await self.discard(thread_id)
                self._locks.pop(thread_id, None)
        self.top_up()

    async def close(self) -> None:
        """End every kernel."""
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(BaseException):
                await self._refill
        for sandbox in [*self._kernels.values(), *self._spares]:
            await sandbox.close()
        self._kernels.clear()
        self._spares.clear()
