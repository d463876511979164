"""Provider errors: their text loses keys and credentials before `last_error`, logs and events;
a stream cut off mid-answer fails the run without asking the model again."""

import json

from openai import OpenAI
from openai.types.beta import Thread
from openai.types.beta.threads import Run

from tests.fakes.model_server import ScriptedModelServer, last_input_text
from tests.kafka_tap import KafkaTap
from tests.system import System, wait_until

SECRETS = ["sk-proj-Abc123SECRETxyz987", "SECRET2live", "hunter2pass", "test-key"]
"""`test-key` is the run-poller's own OPENAI_API_KEY (see conftest)."""


def _failed_run(client: OpenAI, prompt: str) -> tuple[Thread, Run]:
    """A thread asking `prompt` and its run, polled to its end, which must be `failed`."""
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": prompt}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "failed"
    return thread, run


def test_a_provider_error_reaches_last_error_without_secrets(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    leaky = (
        "Incorrect API key provided: sk-proj-Abc123SECRETxyz987. Sent with Authorization:"
        " Bearer SECRET2live through https://proxyuser:hunter2pass@proxy.example/v1;"
        " your key test-key is invalid."
    )
    model.script("leak my key", status=401, error_message=leaky)
    thread, run = _failed_run(client, "leak my key")
    assert run.last_error is not None
    message = run.last_error.message
    assert "Incorrect API key provided" in message  # the provider's words stay useful
    assert "[redacted]" in message
    assert not [s for s in SECRETS if s in message], message
    events = wait_until(lambda: [e for e in tap.events(thread.id)
                                 if e["type"] == "thread.run.failed"])  # fmt: skip
    published = json.dumps(tap.events(thread.id))
    assert events
    assert not [s for s in SECRETS if s in published]
    assert not [s for s in SECRETS[:3] if s in system.log("run_poller")]


def test_a_model_that_hangs_up_mid_answer_fails_the_run_without_repeating_its_text(
    client: OpenAI, model: ScriptedModelServer, tap: KafkaTap
) -> None:
    prompt = "hang up on me"
    model.script(prompt, reply="one two three four five", chunk_delay_s=0.05, cut_after=2)
    thread, run = _failed_run(client, prompt)
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert run.last_error.message.startswith("The model endpoint failed mid-answer: ")
    # The cut came after text went out, and the model was not asked again (a second attempt
    # would have streamed its text after what was already sent).
    wait_until(lambda: [e for e in tap.events(thread.id) if e["type"] == "thread.run.failed"])
    deltas = [e["data"]["delta"]["content"][0]["text"]["value"] for e in tap.events(thread.id)
              if e["type"] == "thread.message.delta"]  # fmt: skip
    assert "".join(deltas) == "one two "
    asked = [r for r in model.requests if last_input_text(r) == prompt]
    assert len(asked) == 1
    reply = client.beta.threads.messages.list(thread.id, order="desc").data[0]
    assert reply.role == "assistant"
    assert reply.status == "incomplete"
    assert reply.content[0].text.value == "one two "  # type: ignore[union-attr]
