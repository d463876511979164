"""Without an OTLP endpoint, tracing costs nothing: the SDK is never imported, and nothing is
stored with rows or sent in headers."""

import os
import subprocess
import sys

PROBE = """
import sys
from services.core import outbox, tracing
import services.api.app, services.run_poller.engine, services.tool_executor.executor
tracing.configure("api")
with tracing.span("a turn") as span:
    assert span is None
    assert tracing.current() is None
    assert tracing.http_headers() is None
    sent = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"
    assert tracing.from_headers([("traceparent", sent)]) is None
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk") or "otlp" in m)
assert not loaded, loaded
print("off")
"""


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", PROBE], env=clean | env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_without_an_endpoint_no_sdk_is_loaded_and_nothing_is_carried() -> None:
    done = _run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "off"


def test_with_an_endpoint_the_probe_fails_so_it_can_tell() -> None:
    done = _run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert done.returncode != 0
    assert "AssertionError" in done.stderr
