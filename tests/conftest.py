"""Session fixtures: a scripted model, real Postgres and broker, and the five services."""

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from tests.fakes.collector import Collector
from tests.fakes.model_server import ScriptedModelServer
from tests.fakes.webhook import SECRET, SHIP_SECRET, WebhookServer
from tests.kafka_tap import KafkaTap
from tests.system import API_KEY, Infrastructure, System

PLUGIN_SITE = Path(__file__).parent / "fakes" / "plugin_site"


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A scratch directory for data and logs (kept with THREADBUS_KEEP_TEST_DATA=1)."""
    path = Path(tempfile.mkdtemp(prefix="threadbus-test-"))
    os.chmod(path, 0o755)
    yield path
    if not os.environ.get("THREADBUS_KEEP_TEST_DATA"):
        import shutil

        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def model() -> Iterator[ScriptedModelServer]:
    """The scripted OpenAI-compatible model server."""
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> None:
    """Every test starts with no scripted rules (the default reply is an echo)."""
    if "model" in request.fixturenames:
        request.getfixturevalue("model").reset()


@pytest.fixture(scope="session")
def infra(workdir: Path) -> Iterator[Infrastructure]:
    """Real Postgres (pgvector) and a real Kafka-protocol broker, migrated and with topics."""
    infrastructure = Infrastructure(workdir).start()
    yield infrastructure
    infrastructure.stop()


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookServer]:
    """A webhook receiver that server-side function `ship_order` is configured to call."""
    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def collector() -> Iterator[Collector]:
    """Where every service of the suite exports its traces (OTLP over HTTP)."""
    receiver = Collector().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def system(
    infra: Infrastructure,
    model: ScriptedModelServer,
    webhook: WebhookServer,
    collector: Collector,
    workdir: Path,
) -> Iterator[System]:
    """Every service as its own process, talking to the scripted model.

    The tool-executor offers the functions of `tests/fakes/functions.py`, one of them through
    a `threadbus.functions` entry point, and `ship_order` through a signed webhook. Every
    service exports traces to `collector`, in batches every 200 ms.
    """
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "test-key",
        "PYTHONPATH": str(PLUGIN_SITE),
        "THREADBUS_FUNCTIONS": ",".join(
            f"{name}=tests.fakes.functions:{name}"
            for name in (
                "lookup_weather",
                "slow_echo",
                "explode",
                "dawdle",
                "garbage",
                "record_start",
            )
        ),
        "THREADBUS_FUNCTION_WEBHOOKS": json.dumps(
            {
                "ship_order": {"url": f"{webhook.url}/ship_order", "secret": SHIP_SECRET},
                "redirecting": f"{webhook.url}/redirect",
                "huge": f"{webhook.url}/huge",
            }
        ),
        "THREADBUS_WEBHOOK_SECRET": SECRET,
        "THREADBUS_TEST_CALL_LOG": str(workdir / "calls.log"),
    }
    running = System(infra, env, workdir / "logs").start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tap(infra: Infrastructure) -> Iterator[KafkaTap]:
    """Publishes inbound events and records outbound events and dead letters."""
    kafka = KafkaTap(infra.bootstrap).start()
    yield kafka
    kafka.stop()


@pytest.fixture
def client(system: System) -> Iterator[OpenAI]:
    """The official SDK, validating every response strictly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sdk = OpenAI(base_url=system.api_url, api_key=API_KEY, _strict_response_validation=True)
    yield sdk
    sdk.close()


@pytest.fixture(autouse=True)
def leave_the_system_ready(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the shared system (and maybe killed and replaced a service),
    wait until it is ready again, so the next test does not start against a half-up system."""
    yield
    if "system" not in request.fixturenames:
        return
    system: System = request.getfixturevalue("system")
    try:
        system.wait_ready()
    except TimeoutError:
        # This test's teardown fails with the diagnosis. A fresh run-poller is tried once, so
        # that one wedge does not fail every later test 90 s at a time (and overrun CI); if
        # that does not help either, the session ends here.
        system.spawn("run_poller")
        try:
            system.wait_ready(timeout=60)
        except TimeoutError as still:
            pytest.exit(f"the shared system stays unready after a fresh run-poller: {still}", 1)
        raise
