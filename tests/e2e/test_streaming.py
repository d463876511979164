"""User story: Assistants streaming through the SDK helpers, fed from Kafka, resumable."""

import json
import threading
from typing import Any

import httpx
import openai
import pytest
from openai import AssistantEventHandler, AsyncOpenAI, OpenAI
from openai.types.beta.threads import Message, Text, TextDelta
from openai.types.beta.threads.runs import ToolCall

from services.core.embedded import free_port
from tests.e2e.test_function_tools import call, function_tool
from tests.fakes.model_server import ScriptedModelServer
from tests.sse import read_all
from tests.system import API_KEY, HEADERS, System, wait_until

PLAIN = [
    "thread.run.created", "thread.run.queued", "thread.run.in_progress",
    "thread.run.step.created", "thread.run.step.in_progress",
    "thread.message.created", "thread.message.in_progress",
]  # fmt: skip
PLAIN_END = ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"]
BETA = HEADERS


def without_deltas(names: list[str], delta: str = "thread.message.delta") -> list[str]:
    return [n for n in names if n != delta]


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", instructions="Be brief.").id


def test_plain_run_streams_token_by_token(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str
) -> None:
    answer = "one two three four five six seven eight nine ten"
    model.script("count to ten", reply=answer, chunk_delay_s=0.15)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "count to ten"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
        final = stream.get_final_messages()
    assert without_deltas(names) == PLAIN + PLAIN_END
    assert names.count("thread.message.delta") >= 3  # coalesced, but live
    assert run.status == "completed"
    assert run.usage is not None
    assert final[0].content[0].text.value == answer  # type: ignore[union-attr]


def test_text_deltas_and_a_handler_see_the_whole_answer(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str
) -> None:
    model.script("handler please", reply="Handled in many small pieces.", chunk_delay_s=0.03)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "handler please"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        joined = "".join(stream.text_deltas)
    assert joined == "Handled in many small pieces."

    seen: list[str] = []

    class Recorder(AssistantEventHandler):
        def on_text_created(self, text: Text) -> None:
            seen.append(f"text_created:{text.value}")

        def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
            assert snapshot.value.endswith(delta.value or "")
            seen.append(f"delta:{snapshot.value}")

        def on_message_done(self, message: Message) -> None:
            seen.append(f"done:{message.content[0].text.value}")  # type: ignore[union-attr]

    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="handler please")
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, event_handler=Recorder()
    ) as stream:
        stream.until_done()
        assert stream.get_final_run().status == "completed"
    assert seen[0].startswith("text_created:")
    assert seen[-1] == "done:Handled in many small pieces."
    assert seen[-2] == "delta:Handled in many small pieces."


async def test_async_client_streams(
    system: System, model: ScriptedModelServer, client: OpenAI, assistant_id: str
) -> None:
    model.script("async please", reply="Asynchronously yours.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "async please"}])
    async with AsyncOpenAI(base_url=system.api_url, api_key=API_KEY,
                           _strict_response_validation=True) as aclient:  # fmt: skip
        async with aclient.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant_id
        ) as stream:
            names = [event.event async for event in stream]
            final = await stream.get_final_messages()
        assert without_deltas(names) == PLAIN + PLAIN_END
        assert final[0].content[0].text.value == "Asynchronously yours."  # type: ignore[union-attr]

        async with aclient.beta.threads.create_and_run_stream(
            assistant_id=assistant_id,
            thread={"messages": [{"role": "user", "content": "async please"}]},
        ) as stream:
            first = None
            async for event in stream:
                first = first or event
            run = await stream.get_final_run()
        assert first is not None
        assert first.event == "thread.created"
        assert first.data.id == run.thread_id  # type: ignore[union-attr]


def test_create_and_run_stream_starts_with_the_thread(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str
) -> None:
    model.script("brand new thread", reply="Welcome.")
    with client.beta.threads.create_and_run_stream(
        assistant_id=assistant_id,
        thread={"messages": [{"role": "user", "content": "brand new thread"}]},
    ) as stream:
        events = list(stream)
        run = stream.get_final_run()
    assert events[0].event == "thread.created"
    assert events[0].data.id == run.thread_id  # type: ignore[union-attr]
    assert without_deltas([e.event for e in events[1:]]) == PLAIN + PLAIN_END
    assert all(e.data.thread_id == run.thread_id for e in events[1:]  # type: ignore[union-attr]
               if e.event.startswith("thread.run.") and not e.event.endswith("delta"))  # fmt: skip


def test_function_calls_stream_then_submit_continues(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    model.script("stream two calls", tool_calls=[call("get_weather", city="Paris"),
                                                 call("get_weather", city="Rome")])  # fmt: skip
    model.script("mild", reply="Mild in both.")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[function_tool("get_weather")])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "stream two calls"}])
    created: list[ToolCall] = []

    class Calls(AssistantEventHandler):
        def on_tool_call_created(self, tool_call: ToolCall) -> None:
            created.append(tool_call)

    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=Calls()
    ) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
        steps = stream.get_final_run_steps()
    assert names == [
        "thread.run.created", "thread.run.queued", "thread.run.in_progress",
        "thread.run.step.created", "thread.run.step.in_progress",
        "thread.run.step.delta", "thread.run.step.delta", "thread.run.requires_action",
    ]  # fmt: skip
    assert run.status == "requires_action"
    assert run.required_action is not None
    pending = run.required_action.submit_tool_outputs.tool_calls
    assert [c.id for c in created] == [c.id for c in pending]  # once each, no "call_acall_a"
    snapshot = steps[0].step_details.tool_calls  # type: ignore[union-attr]
    assert [c.function.arguments for c in snapshot] == [c.function.arguments for c in pending]  # type: ignore[union-attr]

    with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": c.id, "output": "mild"} for c in pending],
    ) as stream:
        names = [event.event for event in stream]
        final = stream.get_final_messages()
    assert without_deltas(names) == [
        "thread.run.step.completed", "thread.run.queued", "thread.run.in_progress",
        *PLAIN[3:], *PLAIN_END,
    ]  # fmt: skip
    assert final[0].content[0].text.value == "Mild in both."  # type: ignore[union-attr]


def test_a_cancelled_run_streams_its_end(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str
) -> None:
    model.script("cancel my stream", reply="never", delay_s=5)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "cancel my stream"}])

    def cancel_when_asked() -> None:
        model.wait_for_request("cancel my stream", timeout=30)
        run_id = client.beta.threads.runs.list(thread_id=thread.id).data[0].id
        client.beta.threads.runs.cancel(run_id, thread_id=thread.id)

    canceller = threading.Thread(target=cancel_when_asked)
    canceller.start()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
    canceller.join(10)
    assert names == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                     "thread.run.cancelling", "thread.run.cancelled"]  # fmt: skip
    assert run.status == "cancelled"


def test_a_cancel_mid_answer_leaves_an_incomplete_message(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str
) -> None:
    model.script("cancel mid answer", reply=" ".join(f"w{i}" for i in range(60)),
                 chunk_delay_s=0.1)  # fmt: skip
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "cancel mid answer"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        names = []
        for event in stream:
            names.append(event.event)
            if event.event == "thread.message.delta" and names.count(event.event) == 2:
                client.beta.threads.runs.cancel(stream.current_run.id, thread_id=thread.id)  # type: ignore[union-attr]
    tail = without_deltas(names)[-4:]
    assert tail == ["thread.run.cancelling", "thread.message.incomplete",
                    "thread.run.step.cancelled", "thread.run.cancelled"]  # fmt: skip
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.status == "incomplete"
    assert message.incomplete_details is not None
    assert message.incomplete_details.reason == "run_cancelled"
    assert message.content[0].text.value.startswith("w0 w1")  # type: ignore[union-attr]


def test_a_failed_run_streams_its_end(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str
) -> None:
    model.script("fail my stream", status=500)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "fail my stream"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
    assert names == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                     "thread.run.failed"]  # fmt: skip
    assert run.status == "failed"
    assert run.last_error is not None


def test_a_stream_that_fails_validation_is_a_json_error(client: OpenAI) -> None:
    thread = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError, match="No assistant found"):  # noqa: SIM117
        with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id="asst_nope"):
            pass


def raw_stream(url: str, headers: dict[str, str] | None = None) -> list[Any]:
    with httpx.stream("GET", url, headers=headers or BETA, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_all(response)


def test_any_api_replica_streams_any_run(
    client: OpenAI, model: ScriptedModelServer, system: System, assistant_id: str
) -> None:
    port = free_port()
    other = system.spawn("api", label="api-2", THREADBUS_API_PORT=str(port))
    try:
        wait_until(lambda: _healthy(port), timeout=30)
        model.script("replica", reply="Served by the other replica.", chunk_delay_s=0.05)
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "replica"}])
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
        url = f"http://127.0.0.1:{port}/v1/threads/{thread.id}/runs/{run.id}/events"
        events = raw_stream(url)
    finally:
        other.stop()
    names = [e.event for e in events]
    assert without_deltas(names) == PLAIN + PLAIN_END + ["done"]
    assert events[-1].data == "[DONE]"
    assert all(e.id for e in events[:-1])
    text = "".join(e.json()["delta"]["content"][0]["text"]["value"]
                   for e in events if e.event == "thread.message.delta")  # fmt: skip
    assert text == "Served by the other replica."


def test_a_dropped_stream_resumes_with_last_event_id(
    client: OpenAI, model: ScriptedModelServer, system: System, assistant_id: str
) -> None:
    words = " ".join(f"word{i}" for i in range(40))
    model.script("resume me", reply=words, chunk_delay_s=0.05)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "resume me"}])
    body = {"assistant_id": assistant_id, "stream": True}
    url = f"{system.api_url}/threads/{thread.id}/runs"
    seen: list[Any] = []
    with httpx.stream("POST", url, headers=BETA, json=body, timeout=60) as response:
        for event in read_all_until(response, lambda e: e.event == "thread.message.delta", 2):
            seen.append(event)
    run_id = seen[0].json()["id"]
    last = seen[-1].id
    rest = raw_stream(
        f"{system.api_url}/threads/{thread.id}/runs/{run_id}/events",
        headers={**BETA, "Last-Event-ID": last},
    )
    whole = raw_stream(f"{system.api_url}/threads/{thread.id}/runs/{run_id}/events")
    assert [e.id for e in seen + rest] == [e.id for e in whole]
    assert len({e.id for e in seen + rest}) == len(seen + rest)
    text = "".join(e.json()["delta"]["content"][0]["text"]["value"]
                   for e in seen + rest if e.event == "thread.message.delta")  # fmt: skip
    assert text == words
    assert rest[-2].event == "thread.run.completed"


def read_all_until(response: httpx.Response, stop: Any, count: int) -> list[Any]:
    from tests.sse import events

    out: list[Any] = []
    hits = 0
    for event in events(response.iter_lines()):
        out.append(event)
        hits += bool(stop(event))
        if hits == count:
            break
    return out


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
    except httpx.HTTPError:
        return False


def test_raw_stream_framing(
    client: OpenAI, model: ScriptedModelServer, system: System, assistant_id: str
) -> None:
    model.script("raw framing", reply="Raw.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "raw framing"}])
    url = f"{system.api_url}/threads/{thread.id}/runs"
    body = {"assistant_id": assistant_id, "stream": True}
    with httpx.stream("POST", url, headers=BETA, json=body, timeout=60) as response:
        raw = response.read().decode()
    assert raw.endswith("event: done\ndata: [DONE]\n\n")
    first = raw.split("\n\n")[0].splitlines()
    assert first[0].startswith("id: ")
    assert first[1] == "event: thread.run.created"
    assert json.loads(first[2].removeprefix("data: "))["status"] == "queued"


def test_the_in_progress_run_is_the_queued_run_started(
    client: OpenAI, model: ScriptedModelServer, system: System, assistant_id: str
) -> None:
    """`thread.run.in_progress` is written by the claim's statement, the run rendered by
    Postgres: it must be the queued run's object, number types included, but for its start;
    also when the run is queued again by its tool outputs."""
    model.script("render me", tool_calls=[call("lookup", q="x")])
    model.script("looked up", reply="Rendered.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "render me"}])
    body = {
        "assistant_id": assistant_id, "stream": True, "model": "gpt-4o-mini",
        "instructions": "Ünïcode \"quoted\"\nlines", "metadata": {"k": "v", "e": ""},
        "tools": [function_tool("lookup"), {"type": "code_interpreter"}],
        "temperature": 1, "top_p": 0.35, "max_prompt_tokens": 5000,
        "max_completion_tokens": 300, "parallel_tool_calls": False,
        "truncation_strategy": {"type": "last_messages", "last_messages": 3},
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_object"},
    }  # fmt: skip
    url = f"{system.api_url}/threads/{thread.id}/runs"
    with httpx.stream("POST", url, headers=BETA, json=body, timeout=60) as response:
        frames = {event.event: event.data for event in read_all(response)}

    def typed(text: str) -> Any:  # 1 and 1.0 told apart
        return json.loads(text, parse_int=lambda v: ("int", v), parse_float=lambda v: ("float", v))

    queued, started = typed(frames["thread.run.queued"]), typed(frames["thread.run.in_progress"])
    assert queued["temperature"] == ("float", "1.0")
    assert queued["started_at"] is None
    assert started["status"] == "in_progress"
    assert started["started_at"][0] == "int"
    assert int(started["started_at"][1]) >= int(queued["created_at"][1])
    assert {**started, "status": "queued", "started_at": None} == queued

    waiting = json.loads(frames["thread.run.requires_action"])
    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    outputs = [{"tool_call_id": c["id"], "output": "looked up"} for c in calls]
    body = {"tool_outputs": outputs, "stream": True}
    with httpx.stream("POST", f"{url}/{waiting['id']}/submit_tool_outputs", headers=BETA,
                      json=body, timeout=60) as response:  # fmt: skip
        frames = {event.event: event.data for event in read_all(response)}
    queued, started = typed(frames["thread.run.queued"]), typed(frames["thread.run.in_progress"])
    assert queued["required_action"] is None  # cleared by the outputs (usage: at the end)
    assert started["status"] == "in_progress"
    assert {**started, "status": "queued", "started_at": queued["started_at"]} == queued
    assert "thread.run.completed" in frames


def test_an_incomplete_run_streams_its_end(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str
) -> None:
    model.script("too long for the budget", reply=" ".join(f"t{i}" for i in range(300)))
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "too long for the budget"}]
    )
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, max_completion_tokens=256
    ) as stream:
        names = [event.event for event in stream]
        run = stream.get_final_run()
    assert without_deltas(names) == [
        *PLAIN, "thread.message.incomplete", "thread.run.step.completed", "thread.run.incomplete"
    ]  # fmt: skip
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_completion_tokens"
