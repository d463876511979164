"""`threadbus up`: infrastructure if needed, migrations, topics, then every service as a process."""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core import bus, db, keys, logs, preflight
from services.core.embedded import EmbeddedKafka, EmbeddedPostgres, terminate_with_parent
from services.core.keeper import STOP_SECONDS, Keeper, stop_all
from services.core.logs import LogFormat
from services.core.preflight import StartupFailure

log = logging.getLogger("threadbus.up")

SERVICES = ("api", "run_starter", "run_poller", "tool_executor", "message_archiver", "file_indexer")
HEALTH_PORTS = {"run_poller": 8081, "run_starter": 8082, "tool_executor": 8083,
                "message_archiver": 8084, "file_indexer": 8085}  # fmt: skip


class UpSettings(BaseSettings):
    """What `threadbus up` needs; the services read their own settings from the environment."""

    model_config = SettingsConfigDict(env_prefix="THREADBUS_", env_file=".env", extra="ignore")

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    data_dir: Path = Path(".threadbus")
    api_port: int = 8000
    api_host: str = "127.0.0.1"
    allow_unauthenticated_network_access: bool = False
    partitions: int = 8
    embedded_postgres_port: int = Field(default=54329)
    embedded_kafka_port: int = Field(default=59092)
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    openai_api_key: str | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    log_format: LogFormat = "text"
    health_port_base: int = Field(
        default=0, description="Workers' probe ports start here (0: 8081-8085)."
    )


@dataclass
class ServiceProcess:
    """One service as a child process: `python -m services.<name>`."""

    name: str
    env: dict[str, str]
    log_path: Path | None = None
    die_with_parent: bool = False
    """SIGTERM the service when the process that started it dies, even by SIGKILL (Linux): a
    killed `threadbus up` leaves no service holding its ports. Only for a parent whose
    starting thread lives as long as it (the kernel signals when that thread ends)."""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        """Spawn the process (its output to the log file, or inherited)."""
        out = self.log_path.open("ab") if self.log_path else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
            preexec_fn=terminate_with_parent if self.die_with_parent else None,
        )  # fmt: skip
        if out:
            out.close()

    @property
    def alive(self) -> bool:
        """The process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()


def _probes(settings: UpSettings) -> str:
    """Where the workers serve /metrics (and their probes), for the banner."""
    ports = sorted(health_port(name, settings.health_port_base) for name in HEALTH_PORTS)
    return f"workers on ports {ports[0]}-{ports[-1]} (run-poller first)"


def health_port(name: str, base: int) -> int:
    """A worker's probe port: `base` plus its offset, or its default when `base` is 0."""
    offset = HEALTH_PORTS[name] - min(HEALTH_PORTS.values())
    return base + offset if base else HEALTH_PORTS[name]


def service_env(
    name: str, database_url: str, bootstrap: str, base: dict[str, str], health_port_base: int = 0
) -> dict[str, str]:
    """The environment of one service process (workers get their own probe port)."""
    env = dict(base)
    env["THREADBUS_DATABASE_URL"] = database_url
    env["THREADBUS_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    if name in HEALTH_PORTS:
        env["THREADBUS_HEALTH_PORT"] = str(health_port(name, health_port_base))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


async def prepare(
    database_url: str, bootstrap: str, partitions: int, *, broker_attempts: int = 60
) -> bool:
    """Apply migrations and create topics; returns whether API keys exist."""
    applied = await db.migrate(database_url)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    await bus.create_topics(bootstrap, partitions, attempts=broker_attempts)
    conn = await db.connect(database_url)
    try:
        return await keys.any_exist(conn)
    finally:
        await conn.close()


def _access(host: str, with_keys: bool) -> str:
    if with_keys:
        return f"API keys required (Authorization: Bearer ...); listening on {host}"
    if keys.is_loopback(host):
        return (f"no API keys: open, on loopback ({host}) only;"
                " `threadbus keys create --project NAME` turns keys on")  # fmt: skip
    return f"no API keys: OPEN to anyone who reaches {host} (allowed by setting)"


def up() -> int:
    """Run the whole system in the foreground until Ctrl-C or SIGTERM.

    Whatever would stop it from starting (a port taken, Postgres or Kafka out of reach, the
    data directory in use) is one line on stderr and status 1, before anything starts.
    """
    settings = UpSettings()
    logs.configure("up", "INFO", settings.log_format)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        preflight.claim_data_dir(data_dir)
    except StartupFailure as failure:
        print(f"threadbus up: {failure}", file=sys.stderr, flush=True)
        return 1
    try:
        return _run(settings, data_dir)
    except StartupFailure as failure:
        print(f"threadbus up: {failure}", file=sys.stderr, flush=True)
        return 1
    finally:
        preflight.release_data_dir(data_dir)


def _ports(settings: UpSettings) -> list[tuple[str, str, int, str]]:
    """Every port `up` will listen on: (what, host, port, the setting that moves it)."""
    wanted = [("the API", settings.api_host, settings.api_port, "THREADBUS_API_PORT")]
    for name in HEALTH_PORTS:
        port = health_port(name, settings.health_port_base)
        wanted.append((f"the {name} probes", "0.0.0.0", port, "THREADBUS_HEALTH_PORT_BASE"))
    if settings.database_url is None:
        wanted.append(("the embedded Postgres", "127.0.0.1", settings.embedded_postgres_port,
                       "THREADBUS_EMBEDDED_POSTGRES_PORT"))  # fmt: skip
    if settings.kafka_bootstrap_servers is None:
        wanted.append(("the embedded Kafka broker", "127.0.0.1", settings.embedded_kafka_port,
                       "THREADBUS_EMBEDDED_KAFKA_PORT"))  # fmt: skip
    return wanted


def _run(settings: UpSettings, data_dir: Path) -> int:
    postgres = kafka = None
    children: list[ServiceProcess] = []
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if settings.database_url is None:
            stale = preflight.stop_stale_postgres(data_dir / "postgres")
            if stale is not None:
                log.warning("stopped an embedded Postgres (pid %d) that an earlier, killed run"
                            " left running on %s", stale, data_dir / "postgres")  # fmt: skip
        preflight.check_ports(_ports(settings))
        database_url = settings.database_url
        if database_url is None:
            postgres = EmbeddedPostgres(data_dir / "postgres", settings.embedded_postgres_port,
                                        data_dir / "postgres.log")  # fmt: skip
            database_url = postgres.start()
        bootstrap = settings.kafka_bootstrap_servers
        if bootstrap is None:
            kafka = EmbeddedKafka(settings.embedded_kafka_port, data_dir / "kafka.log",
                                  die_with_parent=True)  # fmt: skip
            bootstrap = kafka.start()
        try:
            with_keys = asyncio.run(
                prepare(database_url, bootstrap, settings.partitions, broker_attempts=20)
            )
        except Exception as exc:
            failure = preflight.unreachable(exc, database_url, bootstrap)
            if failure is None:
                raise
            raise failure from exc
        refusal = keys.exposure_refusal(
            settings.api_host, settings.allow_unauthenticated_network_access, keys_exist=with_keys
        )
        if refusal:
            print(refusal, file=sys.stderr, flush=True)
            return 1
        base = dict(os.environ)
        for name in SERVICES:
            env = service_env(name, database_url, bootstrap, base, settings.health_port_base)
            child = ServiceProcess(name, env, die_with_parent=True)
            child.start()
            children.append(child)
        model = settings.openai_base_url or (
            "https://api.openai.com/v1" if settings.openai_api_key else None
        )
        print(
            f"\nThreadbus is up.\n"
            f"  API:     http://localhost:{settings.api_port}/v1  (GET /healthz)\n"
            f"  Access:  {_access(settings.api_host, with_keys)}\n"
            f"  Model:   {model or 'none configured: set OPENAI_BASE_URL / OPENAI_API_KEY'}\n"
            f"  Data:    {data_dir}{'' if postgres else ' (Postgres: ' + database_url + ')'}\n"
            f"  Kafka:   {bootstrap}{' (embedded Tansu, in memory)' if kafka else ''}\n"
            f"  Metrics: http://localhost:{settings.api_port}/metrics; {_probes(settings)}\n"
            f"Ctrl-C stops everything.\n",
            flush=True,
        )
        keeper = Keeper(children)
        while not stopping:
            keeper.tend()
            time.sleep(0.2)
    finally:
        stop_all(children, STOP_SECONDS)
        if kafka:
            kafka.stop()
        if postgres:
            postgres.stop()
        log.info("stopped")
    return 0
