"""What every service process opens at start-up and closes at shutdown."""

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.core import bus, db, projects, tracing
from services.core.consuming import Consumer
from services.core.health import HealthServer
from services.core.relay import Relay
from services.core.settings import CoreSettings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The process's pool, producer and outbox relay."""

    settings: CoreSettings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    relay: Relay
    owner: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    )
    """This process, in leases, claims and `workers` (unique even when a container restarts
    with the same host name and pid)."""
    owners: list["TaskOwner"] = field(default_factory=list)
    consumers: dict[str, Consumer] = field(default_factory=dict)

    def consumer(self, group: str) -> Consumer:
        """The retry budget and dead letters of the subscriber of consumer group `group`."""
        if group not in self.consumers:
            self.consumers[group] = Consumer(self.producer, group)
        return self.consumers[group]

    def task_owner(self) -> "TaskOwner":
        """A TaskOwner for the service's background loops, watched by the readiness probe."""
        owner = TaskOwner()
        self.owners.append(owner)
        return owner

    async def ready(self) -> bool:
        """Postgres answers, the producer knows the cluster, every background loop runs, and
        every consumer of this process has joined its group."""
        if not all(owner.alive for owner in self.owners) or not bus.consuming():
            return False
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), 2)
        except (*db.ERRORS, KafkaError):
            return False
        return self.relay.alive

    async def heartbeat(self) -> None:
        """Tell `workers` this process is alive, and whether it consumes yet; at once when a
        consumer joins, else every `HEARTBEAT_SECONDS`."""
        while True:
            bus.JOINED.clear()
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(
                        "INSERT INTO workers (owner, service, consuming) VALUES ($1, $2, $3)"
                        " ON CONFLICT (owner) DO UPDATE SET consuming = EXCLUDED.consuming,"
                        " heartbeat_at = now()",
                        self.owner, self.settings.service_name, bus.consuming(),
                    )  # fmt: skip
            except db.ERRORS as exc:
                log.warning("heartbeat failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bus.JOINED.wait(), HEARTBEAT_SECONDS)

    async def sign_off(self) -> None:
        """Leave `workers` at a graceful stop (a killed process's row goes stale instead)."""
        with contextlib.suppress(*db.ERRORS):
            async with self.pool.acquire(timeout=2) as conn:
                await conn.execute("DELETE FROM workers WHERE owner = $1", self.owner)


HEARTBEAT_SECONDS = 2.0
LIVE_SECONDS = 10.0
"""A worker whose heartbeat is older than this is taken for dead."""


async def consuming(conn: asyncpg.Connection, service: str) -> bool:
    """A live process of `service` has all its consumers in their groups."""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM workers WHERE service = $1 AND consuming"
        " AND heartbeat_at > now() - make_interval(secs => $2))",
        service,
        LIVE_SECONDS,
    )
    return bool(found)


class TaskOwner:
    """Background loops owned by a lifespan: started together, cancelled and drained together."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def alive(self) -> bool:
        """No loop has ended (a loop ends only by dying, until `stop`)."""
        return not any(task.done() for task in self._tasks)

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run `coro` until the owner stops; a loop that dies is logged loudly."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_death)
        self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel every loop and wait for it."""
        for task in self._tasks:
            task.cancel()
        # A loop that died was reported when it did; its error must not break the shutdown.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def _report_death(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("background loop %r died", task.get_name(), exc_info=task.exception())


async def periodic(seconds: float, action: Callable[[], Awaitable[object]], name: str) -> None:
    """Call `action` every `seconds` until cancelled; a failed call is logged, not fatal."""
    while True:
        try:
            await action()
        except (*db.ERRORS, KafkaError) as exc:
            log.warning("%s failed: %s", name, exc)
        except Exception:  # whatever else: logged with its traceback, and the loop goes on
            log.exception("%s failed", name)
        await asyncio.sleep(seconds)


T = TypeVar("T")


class Slot(Generic[T]):
    """Something a lifespan opened, for this process's handlers.

    Handlers take what they need from slots, not from FastStream's `Context` injection, which
    resolved each injected argument in a worker thread: a thread hop per argument per record,
    a tenth of the run-starter's CPU (brokers are made with `apply_types=False`).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._value: T | None = None

    def set(self, value: T | None) -> None:
        """Fill the slot (None empties it)."""
        self._value = value

    def get(self) -> T:
        """What the slot holds; an error before the lifespan filled it."""
        if self._value is None:
            raise RuntimeError(f"{self._name} is not open yet")
        return self._value


RUNTIME: Slot["Runtime"] = Slot("the runtime")
"""This process's runtime, while `open_runtime` is open."""


@contextlib.asynccontextmanager
async def open_runtime(
    settings: CoreSettings, *, health: bool = True, scoped: bool = False
) -> AsyncIterator[Runtime]:
    """Pool, producer, outbox relay and (for workers) the probe server; closed on exit.

    `scoped` (the API): every pooled connection acts in the current request's project.
    """
    tracing.configure(settings.service_name)
    setup = projects.scope_to_current if scoped else None
    pool = await db.create_pool(
        settings.database_url, size=settings.db_pool_size, setup=setup,
        name=f"threadbus {settings.service_name} {os.getpid()}",
        idle_transaction_seconds=settings.db_idle_transaction_seconds,
    )  # fmt: skip
    producer = bus.make_producer(settings.kafka_bootstrap_servers, settings.service_name)
    await producer.start()
    await bus.learn_topics(producer)
    relay = Relay(
        settings.database_url, producer, role=f"{settings.service_name}-relay",
        first_choice=settings.relay_first_choice,
        gather_seconds=settings.relay_gather_ms / 1000,
    )  # fmt: skip
    runtime = Runtime(settings=settings, pool=pool, producer=producer, relay=relay)
    owner = runtime.task_owner()
    owner.start(relay.run(), "outbox relay")
    owner.start(runtime.heartbeat(), "heartbeat")
    probes = HealthServer(settings.health_port, runtime.ready) if health else None
    if probes is not None:
        await probes.start()
    RUNTIME.set(runtime)
    try:
        yield runtime
    finally:
        RUNTIME.set(None)
        if probes is not None:
            await probes.stop()
        await owner.stop()
        await runtime.sign_off()
        await producer.stop()
        await pool.close()
        tracing.shutdown()
