"""The run poll is answered at the door (`services/api/hot.py`), not by the app's router: it
must answer exactly what the app would, errors, headers and metrics included."""

import httpx
import openai
import pytest
from openai import OpenAI

from tests import prometheus
from tests.system import API_KEY, HEADERS, System

ROUTE = "/v1/threads/{thread_id}/runs/{run_id}"
COUNT = "threadbus_http_request_duration_seconds_count"


def scrape(system: System) -> prometheus.Samples:
    return prometheus.parse(httpx.get(f"{system.api_url.removesuffix('/v1')}/metrics").text)


def test_a_polled_run_is_the_run_the_app_lists(system: System, client: OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "hi"}]},
        metadata={"k": "v"},
        poll_interval_ms=20,
    )
    assert run.status == "completed"
    polled = httpx.get(f"{system.api_url}/threads/{run.thread_id}/runs/{run.id}", headers=HEADERS)
    assert polled.status_code == 200
    listed = client.beta.threads.runs.list(thread_id=run.thread_id).data  # the app's router
    assert [r.id for r in listed] == [run.id]
    assert polled.json() == listed[0].model_dump(mode="json")
    assert polled.headers["content-type"] == "application/json"
    assert int(polled.headers["openai-poll-after-ms"]) > 0
    assert polled.headers["x-request-id"].startswith("req_")
    query = httpx.get(
        f"{system.api_url}/threads/{run.thread_id}/runs/{run.id}?ignored=1", headers=HEADERS
    )
    assert query.json() == polled.json()


def test_a_poll_answers_the_apps_errors(system: System, client: OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    other = client.beta.threads.create()
    for thread_id, run_id in ((run.thread_id, "run_nope"), (other.id, run.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        assert caught.value.body == {
            "message": f"No run found with id '{run_id}'.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    with pytest.raises(openai.NotFoundError, match="No thread found with id 'thread_nope'"):
        client.beta.threads.runs.retrieve(run.id, thread_id="thread_nope")
    unbeta = httpx.get(
        f"{system.api_url}/threads/{run.thread_id}/runs/{run.id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert unbeta.status_code == 400
    assert unbeta.json()["error"]["code"] == "invalid_beta"
    slash = httpx.get(f"{system.api_url}/threads/{run.thread_id}/runs/{run.id}/", headers=HEADERS)
    assert slash.status_code == 307  # not a poll's path: the app redirects it to the poll's
    assert slash.headers["location"].endswith(f"/threads/{run.thread_id}/runs/{run.id}")


def test_polls_are_counted_under_their_route(system: System, client: OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    before = scrape(system)
    for _ in range(3):
        client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve("run_nope", thread_id=run.thread_id)
    after = scrape(system)
    ok = prometheus.moved(before, after, COUNT, method="GET", route=ROUTE, status="200")
    missing = prometheus.moved(before, after, COUNT, method="GET", route=ROUTE, status="404")
    assert (ok, missing) == (3, 1)
