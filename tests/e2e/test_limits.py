"""Limits: request bodies, text fields and lists as the hosted API capped them, a request rate
per key (429 with the headers the SDKs read) and a cap on concurrent streams per key."""

import contextlib
import json
import threading
import uuid
import warnings
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from services.core.embedded import free_port
from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap, user_message
from tests.system import API_KEY, HEADERS, System, answers, wait_until


@contextlib.contextmanager
def _api(system: System, label: str, **settings: str) -> Iterator[OpenAI]:
    port = free_port()
    api = system.spawn("api", label=label, THREADBUS_API_PORT=str(port), **settings)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY,
                            max_retries=0)  # fmt: skip
        yield client
        client.close()
    finally:
        api.stop()


def test_a_body_over_the_cap_gets_413_declared_or_streamed(system: System) -> None:
    body = json.dumps({"model": "gpt-4o", "instructions": "x" * (9 * 1024 * 1024)}).encode()
    declared = httpx.post(f"{system.api_url}/assistants", content=body, headers=HEADERS,
                          timeout=60)  # fmt: skip
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = httpx.post(f"{system.api_url}/assistants", content=chunks(), headers=HEADERS,
                          timeout=60)  # fmt: skip
    assert streamed.status_code == 413
    assert streamed.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("instructions", "x" * 256_001),
        ("additional_instructions", "x" * 256_001),
        ("tools", [{"type": "code_interpreter"}] * 21),
        ("metadata", {f"k{i}": "v" for i in range(17)}),
        ("model", "m" * 257),
    ],
)
def test_run_fields_are_capped(client: OpenAI, field: str, value: object) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id,
                                        **{field: value})  # type: ignore[arg-type]  # fmt: skip
    assert caught.value.param is not None
    assert caught.value.param.startswith(field)
    assert client.beta.threads.runs.list(thread.id).data == []  # nothing was created


def test_tool_outputs_are_capped(client: OpenAI) -> None:
    thread = client.beta.threads.create()
    outputs = [{"tool_call_id": f"call_{i}", "output": "x"} for i in range(129)]
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.submit_tool_outputs(
            run_id="run_x",
            thread_id=thread.id,
            tool_outputs=outputs,  # type: ignore[arg-type]
        )
    assert caught.value.param == "tool_outputs"


def test_an_inbound_event_over_a_cap_goes_to_the_dlq(client: OpenAI, tap: KafkaTap) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread_id = f"thread_capped_{uuid.uuid4().hex}"
    event = user_message(thread_id, assistant.id, "hi", run={"instructions": "x" * 256_001})
    tap.publish(event, key=thread_id)
    letter = wait_until(lambda: [d for d in tap.dead_letters() if d["event_id"] == event["id"]])
    assert "instructions" in letter[0]["reason"]


def test_a_key_over_its_rate_gets_429_with_the_headers(system: System) -> None:
    with _api(system, "api-rate", THREADBUS_RATE_LIMIT_PER_MINUTE="3") as client:
        seen = []
        for _ in range(3):
            answer = client.beta.assistants.with_raw_response.list()
            seen.append(answer.headers["x-ratelimit-remaining-requests"])
            assert answer.headers["x-ratelimit-limit-requests"] == "3"
            assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
        assert seen == ["2", "1", "0"]
        with pytest.raises(openai.RateLimitError) as caught:
            client.beta.assistants.list()
        headers = caught.value.response.headers
        assert int(headers["retry-after"]) >= 1
        assert int(headers["retry-after-ms"]) > 0
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert caught.value.code == "rate_limit_exceeded"
        # Probes are not limited.
        assert answers(str(client.base_url).removesuffix("/v1/") + "/healthz")


def test_a_key_at_its_stream_cap_gets_429(system: System, model: ScriptedModelServer) -> None:
    with _api(system, "api-streams", THREADBUS_MAX_STREAMS_PER_KEY="1") as client:
        words = " ".join(f"s{i}" for i in range(60))
        model.script("hold the stream", reply=words, chunk_delay_s=0.05, times=1)
        assistant = client.beta.assistants.create(model="gpt-4o")
        first = client.beta.threads.create(
            messages=[{"role": "user", "content": "hold the stream"}]
        )
        second = client.beta.threads.create(messages=[{"role": "user", "content": "second"}])
        opened = threading.Event()
        names: list[str] = []

        def hold() -> None:
            with client.beta.threads.runs.stream(thread_id=first.id,
                                                 assistant_id=assistant.id) as stream:  # fmt: skip
                for event in stream:
                    names.append(event.event)
                    opened.set()

        holder = threading.Thread(target=hold)
        holder.start()
        assert opened.wait(30)
        with pytest.raises(openai.RateLimitError, match="Too many concurrent streams"):
            client.beta.threads.runs.create(thread_id=second.id, assistant_id=assistant.id,
                                            stream=True)  # fmt: skip
        assert client.beta.threads.runs.list(second.id).data == []  # refused before creating
        holder.join(60)
        assert names[-1] == "thread.run.completed"
        with client.beta.threads.runs.stream(thread_id=second.id,
                                             assistant_id=assistant.id) as stream:  # fmt: skip
            stream.until_done()
