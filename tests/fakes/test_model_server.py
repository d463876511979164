"""Self-test of the scripted model server, driven through the real ``openai`` SDK over HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.model_server import PER_MESSAGE_TOKENS, ScriptedModelServer

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


@pytest.fixture
def model(server: ScriptedModelServer) -> ScriptedModelServer:
    server.reset()
    return server


@pytest.fixture
def client(server: ScriptedModelServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as c:
        yield c


def _stream(client: openai.OpenAI, text: str) -> list[Any]:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return list(stream)


def test_streaming_reply_and_usage(model: ScriptedModelServer, client: openai.OpenAI) -> None:
    model.script("weather", reply="It is sunny in Paris today.", chunk_delay_s=0.01)
    chunks = _stream(client, "what is the weather like?")
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    assert len([p for p in content if p]) == 6
    assert "".join(p or "" for p in content) == "It is sunny in Paris today."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 5 + PER_MESSAGE_TOKENS
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.total_tokens == 5 + PER_MESSAGE_TOKENS + 6
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_default_echo_non_streaming(model: ScriptedModelServer, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4 + 2 * PER_MESSAGE_TOKENS
    assert model.requests[0]["messages"][1]["content"] == "hello there"


def test_tool_calls_stream(model: ScriptedModelServer, client: openai.OpenAI) -> None:
    args = json.dumps({"city": "Paris", "unit": "celsius"})
    model.script("weather", tool_calls=[{"name": "get_weather", "arguments": args}], times=1)
    chunks = _stream(client, "weather in Paris?")
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                call["id"] = tc.id
            if tc.function and tc.function.name:
                call["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # times=1: the rule is used up, so the next request gets the default echo.
    again = _stream(client, "weather")
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == "Echo: weather"


def test_rate_limit_then_success(model: ScriptedModelServer, client: openai.OpenAI) -> None:
    model.script("retry me", status=429, error_times=1)
    model.script("retry me", reply="second time lucky")
    with pytest.raises(openai.RateLimitError) as excinfo:
        _stream(client, "please retry me")
    assert excinfo.value.status_code == 429
    assert isinstance(excinfo.value.body, dict)
    assert excinfo.value.body["code"] == "rate_limit_exceeded"
    chunks = _stream(client, "please retry me")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "second time lucky"
    )


def test_control_api(model: ScriptedModelServer, client: openai.OpenAI) -> None:
    root = model.base_url.removesuffix("/v1")
    with httpx.Client(base_url=root) as http:
        http.post("/_control/rules", json={"match": "ping", "reply": "pong"}).raise_for_status()
        assert http.post("/_control/rules", json={"bogus": 1}).status_code == 422
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "ping"}]
        )
        assert completion.choices[0].message.content == "pong"
        logged = http.get("/_control/requests").json()
        assert [r["messages"][-1]["content"] for r in logged] == ["ping"]
        http.delete("/_control/rules").raise_for_status()
        assert http.get("/_control/requests").json() == []
    assert model.requests == []


def test_wait_for_request_while_reply_pending(
    model: ScriptedModelServer, client: openai.OpenAI
) -> None:
    model.script("slow", reply="finally", delay_s=2)
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(
            "".join(
                c.choices[0].delta.content or "" for c in _stream(client, "slow one") if c.choices
            )
        )
    )
    started = time.monotonic()
    worker.start()
    body = model.wait_for_request("slow", timeout=5)
    assert time.monotonic() - started < 1.5
    assert body["messages"][-1]["content"] == "slow one"
    assert not result
    worker.join(timeout=10)
    assert result == ["finally"]
    with pytest.raises(TimeoutError):
        model.wait_for_request("never sent", timeout=0.2)


def test_stop_frees_port() -> None:
    srv = ScriptedModelServer().start()
    port, thread = srv.port, srv._thread
    assert thread is not None
    assert httpx.get(f"{srv.base_url.removesuffix('/v1')}/_control/requests").json() == []
    srv.stop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    assert not thread.is_alive()
