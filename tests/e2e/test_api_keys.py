"""API keys: open on loopback until the first key, then every /v1 request needs a live one.

Each test gets its own database (on the suite's Postgres) and API process, so the keys it
creates do not turn keys on for the rest of the suite.
"""

import asyncio
import os
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import openai
import pytest
from openai import OpenAI

from services.core.embedded import free_port
from tests.system import ServiceProcess, System, wait_until

BETA = {"OpenAI-Beta": "assistants=v2"}


@dataclass
class Site:
    """An API process on a database of its own."""

    database_url: str
    url: str
    process: ServiceProcess

    def threadbus(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `threadbus` command against this site's database."""
        env = {**os.environ, "THREADBUS_DATABASE_URL": self.database_url}
        return subprocess.run([sys.executable, "-m", "services.core.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    def sdk(self, key: str) -> OpenAI:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return OpenAI(base_url=self.url, api_key=key, max_retries=0,
                          _strict_response_validation=True)  # fmt: skip


def new_database(system: System) -> str:
    """A fresh, migrated database on the suite's Postgres; returns its URL."""
    name = f"keys_{uuid.uuid4().hex[:12]}"
    system.sql(f"CREATE DATABASE {name}")
    url = system.infra.database_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "THREADBUS_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "services.core.cli", "migrate"], env=env,
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    return url


def start_api(system: System, database_url: str, label: str, **extra: str) -> Site:
    port = free_port()
    process = system.spawn("api", label=label, THREADBUS_API_PORT=str(port),
                           THREADBUS_DATABASE_URL=database_url, **extra)  # fmt: skip
    return Site(database_url, f"http://127.0.0.1:{port}/v1", process)


@pytest.fixture
def site(system: System) -> Iterator[Site]:
    api = start_api(system, new_database(system), f"api-keys-{uuid.uuid4().hex[:6]}")
    wait_until(lambda: _answers(api.url.removesuffix("/v1") + "/healthz"), timeout=60)
    yield api
    api.process.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).is_success
    except httpx.HTTPError:
        return False


def _rows(database_url: str, query: str) -> list[dict[str, object]]:
    async def run() -> list[dict[str, object]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [dict(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_open_until_the_first_key_then_each_bad_key_gets_401(site: Site) -> None:
    # No key exists: open (this API listens on loopback).
    assert site.sdk("anything").beta.assistants.create(model="gpt-4o").id

    created = site.threadbus("keys", "create", "--project", "alpha")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"tb-[A-Za-z0-9_-]{43}\n", created.stdout), created.stdout
    key = created.stdout.strip()

    def status(headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        response = httpx.get(f"{site.url}/assistants", headers={**BETA, **headers}, timeout=10)
        return response.status_code, response.json()

    code, body = status({})
    assert code == 401
    assert body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "You didn't provide an API key" in body["error"]["message"]  # type: ignore[index]
    for malformed in ("Basic dXNlcjpwYXNz", "Bearer", "Token abc", key):
        code, body = status({"Authorization": malformed})
        assert code == 401, malformed
        assert "You didn't provide an API key" in body["error"]["message"]  # type: ignore[index]
    unknown = "tb-" + "x" * 43
    code, body = status({"Authorization": f"Bearer {unknown}"})
    assert code == 401
    assert body["error"]["code"] == "invalid_api_key"  # type: ignore[index]
    assert unknown not in body["error"]["message"]  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        site.sdk(unknown).beta.assistants.list()

    # The live key works through the SDK; health probes need none.
    assert site.sdk(key).beta.assistants.create(model="gpt-4o").object == "assistant"
    assert _answers(site.url.removesuffix("/v1") + "/healthz")

    listed = site.threadbus("keys", "list")
    assert listed.returncode == 0
    [line] = listed.stdout.splitlines()
    key_id = line.split()[0]
    assert key_id.startswith("key_")
    assert " alpha " in line
    assert line.endswith("live")
    assert key not in listed.stdout
    # Only a hash is kept: the key is in no column of its row.
    [row] = _rows(site.database_url, "SELECT * FROM api_keys")
    assert all(key not in str(value) for value in row.values())

    revoked = site.threadbus("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    code, body = status({"Authorization": f"Bearer {key}"})
    assert code == 401
    assert body["error"]["code"] == "invalid_api_key"  # type: ignore[index]
    assert "revoked" in site.threadbus("keys", "list").stdout
    assert site.threadbus("keys", "revoke", key_id).returncode == 1
    # Revoking every key does not open the API again.
    code, _ = status({})
    assert code == 401


def test_listening_beyond_loopback_needs_a_key_or_the_setting(system: System) -> None:
    database_url = new_database(system)
    exposed = start_api(system, database_url, "api-exposed", THREADBUS_API_HOST="0.0.0.0")
    exposed.process.proc.wait(60)  # type: ignore[union-attr]
    assert exposed.process.proc.returncode != 0  # type: ignore[union-attr]
    log = system.log("api-exposed")
    assert "refusing to listen on 0.0.0.0 with no API keys" in log
    assert "THREADBUS_ALLOW_UNAUTHENTICATED_NETWORK_ACCESS" in log

    allowed = start_api(system, database_url, "api-exposed-allowed", THREADBUS_API_HOST="0.0.0.0",
                        THREADBUS_ALLOW_UNAUTHENTICATED_NETWORK_ACCESS="true")  # fmt: skip
    try:
        wait_until(lambda: _answers(allowed.url.removesuffix("/v1") + "/healthz"), timeout=60)
    finally:
        allowed.process.stop()

    key = allowed.threadbus("keys", "create", "--project", "beta").stdout.strip()
    keyed = start_api(system, database_url, "api-exposed-keyed", THREADBUS_API_HOST="0.0.0.0")
    try:
        wait_until(lambda: _answers(keyed.url.removesuffix("/v1") + "/healthz"), timeout=60)
        assert keyed.sdk(key).beta.assistants.list().data == []
    finally:
        keyed.process.stop()
