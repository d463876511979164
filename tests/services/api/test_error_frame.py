"""The `error` frame a broken stream ends with makes the official SDK raise (reference 5.6)."""

import warnings

import httpx2
import openai
import pytest
from openai import OpenAI

from schemas.runs import Run
from services.api.streaming import DONE, error_frame


def sdk_over(body: bytes) -> OpenAI:
    def answer(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    http = openai.DefaultHttpxClient(transport=httpx2.MockTransport(answer))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return OpenAI(base_url="http://threadbus.test/v1", api_key="k", http_client=http,
                      _strict_response_validation=True)  # fmt: skip


def test_the_stream_helpers_raise_on_theerror_frame() -> None:
    run = Run(id="run_1", created_at=1, thread_id="thread_1", assistant_id="asst_1",
              status="queued", model="m", instructions="")  # fmt: skip
    created = f"event: thread.run.created\ndata: {run.model_dump_json()}\n\n".encode()
    client = sdk_over(created + error_frame("The event stream broke: gone") + DONE)
    with (
        pytest.raises(openai.APIError, match="The event stream broke: gone"),
        client.beta.threads.runs.stream(thread_id="thread_1", assistant_id="asst_1") as stream,
    ):
        stream.until_done()
    raw = sdk_over(created + error_frame("broken") + DONE)
    with pytest.raises(openai.APIError, match="broken"):
        for _ in raw.beta.threads.runs.create(thread_id="thread_1", assistant_id="a", stream=True):
            pass
