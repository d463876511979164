"""The run-poller's model client over its HTTP transport (the SDK's aiohttp one): connection
failures, answers that are not HTTP and streams cut off before their first text are retried,
then fail the run as `server_error` in the SDK's words (the endpoint's address goes to the log
only); a stream cut off mid-answer fails at once; proxies in the environment are used."""

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from services.core.embedded import free_port
from services.core.model import ModelClient, ModelFailure
from tests.fakes.model_server import ScriptedModelServer

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
           "NO_PROXY", "no_proxy")  # fmt: skip


class Listener:
    """A TCP server that reads a request's first line, sends `answer`, and hangs up."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
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
        writer.write(self.answer)
        await writer.drain()
        writer.close()


@pytest.fixture
async def hang_up() -> AsyncIterator[Listener]:
    async with Listener() as listener:
        yield listener


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)


async def _failure(base_url: str, retries: int, out: list[str] | None = None) -> ModelFailure:
    """How one call through the run-poller's client to `base_url` fails (its text into `out`)."""
    client = ModelClient(base_url=base_url, api_key="k", max_retries=retries, backoff=0.01)

    async def on_delta(text: str) -> None:
        if out is not None:
            out.append(text)

    try:
        with pytest.raises(ModelFailure) as failed:
            await client.complete(REQUEST, on_delta)
    finally:
        await client.close()
    return failed.value


def _retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]


async def test_an_endpoint_that_refuses_connections_fails_as_server_error_after_the_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="services.core.model"):
        failure = await _failure(f"http://127.0.0.1:{port}/v1", retries=2)
    assert failure.code == "server_error"
    # The SDK's words over httpx (over aiohttp it would say "Request timed out."); no address.
    assert failure.message == "The model endpoint failed: Connection error."
    retries = _retries_logged(caplog)
    assert len(retries) == 2
    assert all(f"127.0.0.1:{port}" in line for line in retries)  # the operator sees where


async def test_an_endpoint_that_hangs_up_is_tried_again_then_fails_as_server_error(
    hang_up: Listener,
) -> None:
    failure = await _failure(f"http://127.0.0.1:{hang_up.port}/v1", retries=2)
    assert failure.code == "server_error"
    assert hang_up.connections == 3  # the call and its two retries
    assert hang_up.first_lines == [b"POST /v1/chat/completions HTTP/1.1\r\n"] * 3


async def test_an_answer_that_is_not_http_is_tried_again_then_fails_as_server_error() -> None:
    async with Listener(answer=b"garbage, not http\r\n\r\n") as garbage:
        failure = await _failure(f"http://127.0.0.1:{garbage.port}/v1", retries=2)
    assert failure.code == "server_error"
    assert garbage.connections == 3
    assert failure.message == "The model endpoint failed: Connection error."


@pytest.mark.parametrize("bypassed", [False, True], ids=["proxied", "no_proxy"])
async def test_a_proxy_in_the_environment_carries_the_calls_unless_no_proxy_names_the_host(
    hang_up: Listener, monkeypatch: pytest.MonkeyPatch, bypassed: bool
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{hang_up.port}")
    if bypassed:
        monkeypatch.setenv("NO_PROXY", "provider.invalid")
    await _failure("http://provider.invalid/v1", retries=0)
    expected = [b"POST http://provider.invalid/v1/chat/completions HTTP/1.1\r\n"]
    assert hang_up.first_lines == ([] if bypassed else expected)


CUTS = [  # where the stream ends, how; calls made, text streamed, the failure's message
    (0, None, 3, "", "The model endpoint failed: Connection error."),
    (2, None, 1, "one two ", "The model endpoint failed mid-answer: Connection error."),
    (0, "overloaded", 3, "", "The model endpoint failed: overloaded"),
    (2, "overloaded", 1, "one two ", "The model endpoint failed mid-answer: overloaded"),
]


@pytest.mark.parametrize(
    ("texts", "error", "asked", "streamed", "message"),
    CUTS,
    ids=["cut_before_text", "cut_mid_answer", "error_event_before_text", "error_event_mid_answer"],
)
async def test_a_stream_cut_off_is_asked_again_only_before_its_first_text(
    texts: int, error: str | None, asked: int, streamed: str, message: str
) -> None:
    with ScriptedModelServer() as model:
        # A chunk every 20 ms: what went out before the cut has reached the client.
        model.script("hi", reply="one two three four", chunk_delay_s=0.02, cut_after=texts,
                     stream_error=error)  # fmt: skip
        out: list[str] = []
        failure = await _failure(model.base_url, retries=2, out=out)
        assert len(model.requests) == asked  # text out: asking again would repeat it
    assert failure.code == "server_error"
    assert failure.message == message
    assert "".join(out) == streamed


async def test_a_stream_cut_off_after_its_finish_reason_is_a_whole_answer() -> None:
    with ScriptedModelServer() as model:
        model.script("hi", reply="one two three four", chunk_delay_s=0.02, cut_after=4)
        client = ModelClient(base_url=model.base_url, api_key="k", max_retries=2, backoff=0.01)
        try:
            completion = await client.complete(REQUEST)
        finally:
            await client.close()
        assert len(model.requests) == 1
    assert completion.text == "one two three four"
    assert completion.finish_reason == "stop"
