"""User story: a stream sleeps while its run has nothing to say, and is woken by its thread's
commits (the bell), without missing an event when the bell's listener dies."""

import pytest
from openai import OpenAI

from services.api.bell import ROLE
from tests.e2e.test_metrics import scrape
from tests.e2e.test_streaming import PLAIN, PLAIN_END, without_deltas
from tests.fakes.model_server import ScriptedModelServer
from tests.prometheus import moved, value
from tests.system import System, wait_until


@pytest.fixture
def assistant_id(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", instructions="Be brief.").id


def _sleeping(system: System) -> float:
    return value(scrape(system, "api"), "threadbus_sleeping_streams")


def _bells(system: System) -> list[int]:
    rows = system.sql(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1", f"threadbus {ROLE} %"
    )
    return [row["pid"] for row in rows]


def test_a_stream_sleeps_while_the_model_thinks_and_wakes_for_the_answer(
    client: OpenAI, model: ScriptedModelServer, system: System, assistant_id: str
) -> None:
    # Three words 0.7 s apart after 6 s of thought: the stream sleeps between its commits.
    model.script("think first", reply="Thought it over.", delay_s=6.0, chunk_delay_s=0.7)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "think first"}])
    names: list[str] = []
    text = ""
    slept = 0.0
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        for event in stream:
            names.append(event.event)
            if event.event == "thread.run.in_progress":  # the model is thinking for 6 s
                slept = wait_until(lambda: _sleeping(system), timeout=4)
                asleep = scrape(system, "api")
            if event.event == "thread.message.delta":
                text += event.data.delta.content[0].text.value  # type: ignore[index, union-attr]
    assert slept == 1  # this stream, and it fetched nothing meanwhile
    assert without_deltas(names) == PLAIN + PLAIN_END
    assert text == "Thought it over."
    assert _sleeping(system) == 0
    # The answer's commits rang it awake (not only its once-a-second looks).
    woke = scrape(system, "api")
    looks = moved(asleep, woke, "threadbus_stream_wakes_total", by="look")
    assert moved(asleep, woke, "threadbus_stream_wakes_total", by="ring") >= 1, looks


def test_a_stream_keeps_every_delta_when_the_bell_listener_is_killed_mid_answer(
    client: OpenAI, model: ScriptedModelServer, system: System, assistant_id: str
) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    model.script("bell killed", reply=words, chunk_delay_s=0.05)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "bell killed"}])
    names: list[str] = []
    text = ""
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        for event in stream:
            names.append(event.event)
            if event.event == "thread.message.delta":
                text += event.data.delta.content[0].text.value  # type: ignore[index, union-attr]
                if names.count("thread.message.delta") == 2:  # the bell listens: a stream is open
                    before = _bells(system)
                    assert len(before) == 1
                    killed = system.sql("SELECT pg_terminate_backend($1) AS done", before[0])
                    assert killed == [{"done": True}]
    assert without_deltas(names) == PLAIN + PLAIN_END
    assert text == words
    assert "stream bell: listener lost" in system.log("api")
    after = wait_until(lambda: _bells(system), timeout=10)
    assert len(after) == 1
    assert after != before  # it listens again, on a new connection
