"""Kafka TLS and SASL settings reach every client: the admin client of `threadbus
create-topics`, and the producer, consumers and stream readers of a service.

The embedded broker speaks neither, so a client that uses them fails its handshake, and
that failure is what shows the settings were applied: PLAINTEXT (the default) connects.
"""

import os
import subprocess
import sys

import pytest

from tests.system import System, wait_until

SECURED = {
    "sasl-plain": {"THREADBUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                   "THREADBUS_KAFKA_SASL_MECHANISM": "PLAIN"},
    "sasl-scram": {"THREADBUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                   "THREADBUS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"},
    # A CA file that is not there: the TLS context fails as it is built, naming the file.
    "tls": {"THREADBUS_KAFKA_SECURITY_PROTOCOL": "SSL",
            "THREADBUS_KAFKA_SSL_CAFILE": "/nonexistent/threadbus-kafka-ca.pem"},
}  # fmt: skip
CREDENTIALS = {"THREADBUS_KAFKA_SASL_USERNAME": "threadbus", "THREADBUS_KAFKA_SASL_PASSWORD": "pw"}


def create_topics(system: System, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings, "THREADBUS_DATABASE_URL": system.infra.database_url,
           "THREADBUS_KAFKA_BOOTSTRAP_SERVERS": system.infra.bootstrap,
           "THREADBUS_PARTITIONS": "4"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "services.core.cli", "create-topics"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("kind", ["sasl-plain", "sasl-scram"])
def test_the_admin_client_uses_the_security_settings(system: System, kind: str) -> None:
    assert create_topics(system).returncode == 0  # plaintext, as the embedded broker speaks
    secured = create_topics(system, **SECURED[kind], **CREDENTIALS)
    assert secured.returncode != 0
    said = (secured.stdout + secured.stderr).lower()
    assert "sasl" in said, said[-2000:]


@pytest.mark.parametrize(
    ("kind", "said"), [("sasl-scram", "sasl"), ("tls", "/nonexistent/threadbus-kafka-ca.pem")]
)
def test_a_service_uses_the_security_settings(system: System, kind: str, said: str) -> None:
    label = f"run_starter-{kind}"
    starter = system.spawn("run_starter", label=label, **SECURED[kind], **CREDENTIALS)
    try:
        log = wait_until(lambda: said in (text := system.log(label).lower()) and text,
                         timeout=60)  # fmt: skip
        assert "started successfully" not in log
    finally:
        starter.kill()
