"""What every benchmark starts: the scripted model, Postgres, the broker and the services."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fakes.model_server import ScriptedModelServer
from tests.system import HEADERS, Infrastructure, System


@dataclass
class Bench:
    """The running pieces."""

    model: ScriptedModelServer
    infra: Infrastructure
    system: System
    assistant_id: str


@contextlib.contextmanager
def running(*, keep: bool = False, env: dict[str, str] | None = None) -> Iterator[Bench]:
    """Start everything in a temp dir, print the machine and settings, stop it all at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="threadbus-bench-"))
    os.chmod(workdir, 0o755)
    model = infra = system = None
    try:
        model = ScriptedModelServer().start()
        infra = Infrastructure(workdir).start()
        env = {
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "bench-key",
            "THREADBUS_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        system = System(infra, env, workdir / "logs").start()
        print(f"machine: cpu_count={os.cpu_count()}")
        for key, value in sorted(system.env.items()):
            if key.startswith("THREADBUS_") and not key.endswith(("_PORT", "_URL")):
                print(f"  {key}={value}")
        created = httpx.post(
            f"{system.api_url}/assistants",
            json={"name": "Bench", "model": "gpt-4o"},
            headers=HEADERS,
            timeout=30,
        )
        created.raise_for_status()
        yield Bench(model, infra, system, created.json()["id"])
    finally:
        for part in (system, infra, model):
            if part is not None:
                part.stop()
        if keep:
            print(f"data and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]
