"""Deleting the reply a run is writing, or its whole thread, while the model streams.

What Threadbus does (the reference leaves it open; the hosted API allowed both deletes at any
time): a deleted reply stays deleted and the run goes on to `completed` without keeping its
text; a deleted thread takes its runs with it, and the run-poller stops driving the run. In
both cases the engine keeps serving every other run.
"""

import time

from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.system import System, wait_until

SLOW = " ".join(f"word{i}" for i in range(60))


def _assistant(client: OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o").id


def _still_serving(client: OpenAI, model: ScriptedModelServer, assistant_id: str) -> None:
    model.script("are you there", reply="Still here.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "are you there"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error


def test_deleting_the_reply_while_it_streams_lets_the_run_complete(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    model.script("delete my reply", reply=SLOW, chunk_delay_s=0.05)
    assistant_id = _assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "delete my reply"}])
    deleted = None
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        for event in stream:
            if event.event == "thread.message.delta" and deleted is None:
                # Tokens are being written: the reply exists, in progress.
                deleted = client.beta.threads.messages.delete(event.data.id, thread_id=thread.id)
        run = stream.get_final_run()
    assert deleted is not None
    assert deleted.deleted
    assert run.status == "completed", run.last_error
    messages = client.beta.threads.messages.list(thread.id).data
    assert [m.role for m in messages] == ["user"]  # the reply stays deleted
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [s.status for s in steps] == ["completed"]
    # The thread takes new messages and runs.
    model.script("and now", reply="Fine.")
    client.beta.threads.messages.create(thread.id, role="user", content="and now")
    again = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id, poll_interval_ms=50
    )
    assert again.status == "completed", again.last_error
    _still_serving(client, model, assistant_id)


def test_deleting_the_reply_before_a_redrive_lets_the_run_complete(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    """The run-poller dies mid-answer; the reply is deleted; the replacement finishes the run."""
    model.script("crash then delete", reply=SLOW, chunk_delay_s=0.1)
    assistant_id = _assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "crash then delete"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    reply = wait_until(
        lambda: next(iter(client.beta.threads.messages.list(
            thread.id, run_id=run.id).data), None), timeout=30)  # fmt: skip
    system.services["run_poller"].kill()
    client.beta.threads.messages.delete(reply.id, thread_id=thread.id)
    system.spawn("run_poller")
    model.script("crash then delete", reply="Short now.")
    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=100)
    assert final.status == "completed", final.last_error
    assert [m.role for m in client.beta.threads.messages.list(thread.id).data] == ["user"]
    _still_serving(client, model, assistant_id)


def test_deleting_the_thread_while_a_reply_streams_stops_only_that_run(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    model.script("delete my thread", reply=SLOW, chunk_delay_s=0.05)
    assistant_id = _assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "delete my thread"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    wait_until(lambda: client.beta.threads.messages.list(thread.id, run_id=run.id).data, 30)
    assert client.beta.threads.delete(thread.id).deleted
    time.sleep(1.0)  # the model keeps streaming into a run that is gone
    assert system.sql("SELECT id FROM runs WHERE id = $1", run.id) == []
    assert system.services["run_poller"].alive
    _still_serving(client, model, assistant_id)
