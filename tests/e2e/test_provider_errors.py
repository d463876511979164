"""A provider's error text loses keys and credentials before `last_error`, logs and events."""

import json

from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.kafka_tap import KafkaTap
from tests.system import System, wait_until

SECRETS = ["sk-proj-Abc123SECRETxyz987", "SECRET2live", "hunter2pass", "test-key"]
"""`test-key` is the run-poller's own OPENAI_API_KEY (see conftest)."""


def test_a_provider_error_reaches_last_error_without_secrets(
    client: OpenAI, model: ScriptedModelServer, system: System, tap: KafkaTap
) -> None:
    leaky = (
        "Incorrect API key provided: sk-proj-Abc123SECRETxyz987. Sent with Authorization:"
        " Bearer SECRET2live through https://proxyuser:hunter2pass@proxy.example/v1;"
        " your key test-key is invalid."
    )
    model.script("leak my key", status=401, error_message=leaky)
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "leak my key"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "failed"
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
