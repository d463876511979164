"""Errors come back in OpenAI's shape and status codes, as the SDK expects them."""

import httpx
import openai
import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.system import API_KEY, HEADERS, System

BETA = HEADERS


def test_unknown_ids_are_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.beta.assistants.retrieve("asst_missing")
    assert caught.value.status_code == 404
    assert caught.value.body == {
        "message": "No assistant found with id 'asst_missing'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.NotFoundError, match="No thread found with id 'thread_nope'"):
        client.beta.threads.messages.list(thread_id="thread_nope")
    thread = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError, match="No run found"):
        client.beta.threads.runs.retrieve("run_nope", thread_id=thread.id)
    with pytest.raises(openai.NotFoundError, match="No message found"):
        client.beta.threads.messages.retrieve("msg_nope", thread_id=thread.id)


def test_invalid_parameters_are_400_with_param(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model="gpt-4o", temperature=3)
    assert caught.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.list(limit=101)
    assert caught.value.code == "integer_above_max_value"
    assert "Expected a value <= 100, but got 101 instead." in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model="gpt-4o", extra_body={"bogus": 1})
    assert "Unrecognized request argument supplied: bogus" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model="gpt-4o", metadata={f"k{i}": "v" for i in range(17)})
    assert caught.value.param == "metadata"
    with pytest.raises(openai.BadRequestError, match="Missing required parameter: 'model'"):
        client.post("/assistants", body={}, cast_to=object, options={"headers": BETA})
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.messages.create(thread_id=thread.id, role="system", content="x")  # type: ignore[arg-type]
    assert caught.value.param == "role"


def test_a_second_run_on_a_busy_thread_is_400_not_409(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    # The model holds its answer, so the first run is still active when the second is asked
    # for; an instant model let the first run end in between (seen in CI).
    model.script("keep this thread busy", reply="done", delay_s=3.0)
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "keep this thread busy"}]
    )
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError, match=f"already has an active run {run.id}"):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert client.beta.threads.runs.poll(run.id, thread_id=thread.id).status == "completed"


def test_missing_beta_header_and_unknown_paths(system: System) -> None:
    response = httpx.get(
        f"{system.api_url}/assistants", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_beta"
    response = httpx.get(f"{system.api_url}/nothing-here", headers=BETA)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"].startswith("req_")


def test_probes(system: System) -> None:
    base = system.api_url.removesuffix("/v1")
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
