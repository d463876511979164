"""An event too large for the broker: kept aside, and a stream waiting for it still ends."""

import openai
import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.system import System, wait_until


def test_a_stream_whose_last_event_is_too_large_ends_with_an_error(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    model.script("a huge run", reply="Small answer.")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "a huge run"}])
    # Within the hosted caps (256,000 characters each) but 4 bytes a character: the run's
    # instructions are both together, 2 MB, and every event that carries the run is over the
    # broker's 1 MB. (The run may fail too, the instructions exceeding the model's context;
    # its end is what the stream waits for.)
    huge = "\U0001f989" * 255_000
    seen: list[str] = []
    with (
        pytest.raises(openai.APIError, match="too large to stream"),
        client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id, instructions=huge,
            additional_instructions=huge,
        ) as stream,
    ):  # fmt: skip
        seen.extend(event.event for event in stream)
    assert not seen  # every event of this run carries the run
    run = client.beta.threads.runs.list(thread_id=thread.id).data[0]
    assert run.status in ("completed", "failed")
    last = f"thread.run.{run.status}"
    dead = system.sql("SELECT payload->>'type' AS type FROM outbox_dead WHERE key = $1", thread.id)
    assert last in {row["type"] for row in dead}

    def markers() -> list[dict[str, str]]:
        return [e for e in tap.events(thread.id) if e.get("type") == "threadbus.event.dropped"]

    wait_until(lambda: last in {m["data"]["type"] for m in markers()})
    assert all(m["runid"] == run.id for m in markers())
