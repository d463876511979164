"""The run-poller's model client over its HTTP transport: connection failures are retried and
then fail the run as `server_error`; a proxy set in the environment is used."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.core.embedded import free_port
from services.core.model import PROXY_VARIABLES, ModelClient, ModelFailure

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Listener:
    """A TCP server that reads what arrives, then closes the connection without answering."""

    def __init__(self) -> None:
        self.connections = 0
        self.first_lines: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "Listener":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.first_lines.append(await reader.readline())
        writer.close()


@pytest.fixture
async def hang_up() -> AsyncIterator[Listener]:
    async with Listener() as listener:
        yield listener


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


async def _failure(base_url: str, retries: int) -> ModelFailure:
    """How one call through the run-poller's client to `base_url` fails."""
    client = ModelClient(base_url=base_url, api_key="k", max_retries=retries, backoff=0.01)
    try:
        with pytest.raises(ModelFailure) as failed:
            await client.complete(REQUEST)
    finally:
        await client.close()
    return failed.value


async def test_an_endpoint_that_refuses_connections_fails_as_server_error_after_the_retries() -> (
    None
):
    port = free_port()  # nothing listens there
    failure = await _failure(f"http://127.0.0.1:{port}/v1", retries=2)
    assert failure.code == "server_error"
    assert failure.message.startswith("The model endpoint failed: Cannot connect to host"), (
        failure.message
    )
    assert f"127.0.0.1:{port}" in failure.message  # names where it tried


async def test_an_endpoint_that_hangs_up_is_tried_again_then_fails_as_server_error(
    hang_up: Listener,
) -> None:
    failure = await _failure(f"http://127.0.0.1:{hang_up.port}/v1", retries=2)
    assert failure.code == "server_error"
    assert hang_up.connections == 3  # the call and its two retries
    assert hang_up.first_lines == [b"POST /v1/chat/completions HTTP/1.1\r\n"] * 3


async def test_a_proxy_in_the_environment_carries_the_calls(
    hang_up: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{hang_up.port}")
    await _failure("http://provider.invalid/v1", retries=0)
    assert hang_up.first_lines == [b"POST http://provider.invalid/v1/chat/completions HTTP/1.1\r\n"]
