"""User story: a newcomer runs `threadbus up` with nothing configured, stops it, starts it again."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from services.core.embedded import free_port
from services.core.model import NOT_CONFIGURED
from tests.prometheus import parse
from tests.system import wait_until


def start_up(
    data_dir: Path, ports: dict[str, int], log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("THREADBUS_", "OPENAI_"))}  # fmt: skip
    env |= {
        "THREADBUS_DATA_DIR": str(data_dir),
        "THREADBUS_API_PORT": str(ports["api"]),
        "THREADBUS_EMBEDDED_POSTGRES_PORT": str(ports["pg"]),
        "THREADBUS_EMBEDDED_KAFKA_PORT": str(ports["kafka"]),
        "THREADBUS_HEALTH_PORT_BASE": str(ports["health"]),
        "THREADBUS_PARTITIONS": "2",
    } | extra
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.core.cli", "up"], env=env, stdout=out, stderr=out
        )


def stop_up(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_up_with_no_model_then_restart_keeps_data(tmp_path: Path) -> None:
    ports = {"api": free_port(), "pg": free_port(), "kafka": free_port(), "health": free_port()}
    log = tmp_path / "up.log"
    proc = start_up(tmp_path / "data", ports, log)
    try:
        wait_until(lambda: healthy(ports["api"]), timeout=90, interval=0.3)
        banner = log.read_text()
        assert f"http://localhost:{ports['api']}/v1" in banner
        assert "none configured: set OPENAI_BASE_URL / OPENAI_API_KEY" in banner
        assert str(tmp_path / "data") in banner
        assert "no API keys: open, on loopback (127.0.0.1) only" in banner

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = OpenAI(base_url=f"http://127.0.0.1:{ports['api']}/v1", api_key="x",
                            _strict_response_validation=True)  # fmt: skip
        assistant = client.beta.assistants.create(name="Math Tutor", model="gpt-4o")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "2+2?"}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
        )
        assert run.status == "failed"
        assert run.last_error is not None
        assert run.last_error.message == NOT_CONFIGURED
        # The banner says where the metrics are; the run-poller's counted the failed run.
        first = ports["health"]
        assert f"http://localhost:{ports['api']}/metrics" in banner
        assert f"workers on ports {first}-{first + 4} (run-poller first)" in banner
        assert httpx.get(f"http://127.0.0.1:{ports['api']}/metrics", timeout=10).is_success
        scraped = httpx.get(f"http://127.0.0.1:{first}/metrics", timeout=10).text
        failed = frozenset({("status", "failed")})
        assert parse(scraped)[("threadbus_run_transitions_total", failed)] == 1
    finally:
        code = stop_up(proc)
    assert code == 0
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "processes outlived threadbus up"

    proc = start_up(tmp_path / "data", ports, log)
    try:
        wait_until(lambda: healthy(ports["api"]), timeout=90, interval=0.3)
        again = client.beta.assistants.retrieve(assistant.id)
        assert again.name == "Math Tutor"
        assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "failed"
    finally:
        assert stop_up(proc) == 0
        client.close()
