"""Projects: another project's object behaves exactly as one that does not exist.

Two keys of two fresh projects run a seeded random mix of operations (create, list,
retrieve, update, delete, run, stream, upload, search), each aimed at its own objects or at
the other project's; every answer is checked against what the caller's project alone holds.
"""

import random
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.kafka_tap import KafkaTap, user_message
from tests.system import System, wait_until

OPERATIONS = 80
SEED = 11


@dataclass
class Tenant:
    """One project's key, client and the objects it made (and has not deleted)."""

    name: str
    key: str
    sdk: OpenAI
    assistants: set[str] = field(default_factory=set)
    threads: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    stores: set[str] = field(default_factory=set)
    runs: dict[str, str] = field(default_factory=dict)  # run id -> thread id
    messages: dict[str, str] = field(default_factory=dict)  # message id -> thread id


def tenant(system: System, name: str) -> Tenant:
    key = f"tb-{uuid.uuid4().hex}{uuid.uuid4().hex}"[:46]
    system.store_key(key, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sdk = OpenAI(base_url=system.api_url, api_key=key, max_retries=0,
                     _strict_response_validation=True)  # fmt: skip
    return Tenant(name, key, sdk)


@pytest.fixture
def pair(system: System) -> Iterator[tuple[Tenant, Tenant]]:
    suffix = uuid.uuid4().hex[:6]
    a, b = tenant(system, f"iso-a-{suffix}"), tenant(system, f"iso-b-{suffix}")
    yield a, b
    a.sdk.close()
    b.sdk.close()


def like_missing(call: Callable[[str], Any], foreign: str, prefix: str) -> None:
    """`call` with another project's id fails exactly as with an id that never existed: the
    same status and the same message (but for the id)."""
    missing = f"{prefix}{uuid.uuid4().hex}"
    answers = []
    for object_id in (foreign, missing):
        with pytest.raises(openai.APIStatusError) as caught:
            call(object_id)
        answers.append((caught.value.status_code, caught.value.message.replace(object_id, "ID")))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 404, answers


def ids(page: Any) -> set[str]:
    return {item.id for item in page}  # iterating a page fetches the next ones


def _own(actor: Tenant, rng: random.Random) -> None:
    """One operation on the actor's own objects (creating what is missing)."""
    sdk = actor.sdk
    kind = rng.choice(["assistant", "thread", "file", "store", "run", "stream", "update", "delete"])
    if kind == "assistant" or not actor.assistants:
        actor.assistants.add(sdk.beta.assistants.create(model="gpt-4o", name=actor.name).id)
    elif kind == "thread" or not actor.threads:
        thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
        actor.threads.add(thread.id)
    elif kind == "file" or not actor.files:
        made = sdk.files.create(file=("notes.txt", f"{actor.name} notes".encode()),
                                purpose="assistants")  # fmt: skip
        actor.files.add(made.id)
    elif kind == "store" or not actor.stores:
        store = sdk.vector_stores.create(
            name=actor.name, file_ids=[rng.choice(sorted(actor.files))]
        )
        actor.stores.add(store.id)
    elif kind == "run":
        thread_id = rng.choice(sorted(actor.threads))
        message = sdk.beta.threads.messages.create(thread_id, role="user", content="ping")
        actor.messages[message.id] = thread_id
        run = sdk.beta.threads.runs.create_and_poll(
            thread_id=thread_id, assistant_id=rng.choice(sorted(actor.assistants)),
            poll_interval_ms=50,
        )  # fmt: skip
        assert run.status == "completed", run.last_error
        actor.runs[run.id] = thread_id
    elif kind == "stream":
        thread_id = rng.choice(sorted(actor.threads))
        with sdk.beta.threads.runs.stream(
            thread_id=thread_id, assistant_id=rng.choice(sorted(actor.assistants))
        ) as stream:
            stream.until_done()
            run = stream.get_final_run()
        assert run.status == "completed"
        actor.runs[run.id] = thread_id
    elif kind == "update":
        target = rng.choice(sorted(actor.assistants))
        assert sdk.beta.assistants.update(target, metadata={"by": actor.name}).metadata == {
            "by": actor.name
        }
    elif kind == "delete" and len(actor.assistants) > 1:
        target = rng.choice(sorted(actor.assistants))
        assert sdk.beta.assistants.delete(target).deleted
        actor.assistants.discard(target)


def _foreign(actor: Tenant, other: Tenant, rng: random.Random, system: System) -> None:
    """One operation aimed at the other project's objects: each fails as for a missing id."""
    sdk = actor.sdk
    threads, runs, steps = sdk.beta.threads, sdk.beta.threads.runs, sdk.beta.threads.runs.steps
    choices: list[tuple[Callable[[str], Any], str, str]] = []
    for a in other.assistants:
        choices += [
            (lambda x: sdk.beta.assistants.retrieve(x), a, "asst_"),
            (lambda x: sdk.beta.assistants.update(x, name="x"), a, "asst_"),
            (lambda x: sdk.beta.assistants.delete(x), a, "asst_"),
            (lambda x: threads.create_and_run(assistant_id=x), a, "asst_"),
        ]
        if actor.threads:
            mine = rng.choice(sorted(actor.threads))
            choices.append((lambda x, t=mine: runs.create(thread_id=t, assistant_id=x), a, "asst_"))
    for t in other.threads:
        choices += [
            (lambda x: threads.retrieve(x), t, "thread_"),
            (lambda x: threads.update(x, metadata={"x": "y"}), t, "thread_"),
            (lambda x: threads.delete(x), t, "thread_"),
            (lambda x: threads.messages.list(x), t, "thread_"),
            (lambda x: threads.messages.create(x, role="user", content="intrude"), t, "thread_"),
            (lambda x: runs.list(x), t, "thread_"),
        ]
        if actor.assistants:
            mine = rng.choice(sorted(actor.assistants))
            choices.append(
                (lambda x, a=mine: runs.create(thread_id=x, assistant_id=a), t, "thread_")
            )
    for m, t in other.messages.items():
        choices.append((lambda x, m=m: threads.messages.retrieve(m, thread_id=x), t, "thread_"))
    for r, t in other.runs.items():
        choices += [
            (lambda x, r=r: runs.retrieve(r, thread_id=x), t, "thread_"),
            (lambda x, r=r: runs.cancel(r, thread_id=x), t, "thread_"),
            (lambda x, r=r: steps.list(r, thread_id=x), t, "thread_"),
            (lambda x, r=r: _events(system, actor, x, r), t, "thread_"),
        ]
    for f in other.files:
        choices += [
            (lambda x: sdk.files.retrieve(x), f, "file-"),
            (lambda x: sdk.files.content(x), f, "file-"),
            (lambda x: sdk.files.delete(x), f, "file-"),
            (lambda x: sdk.vector_stores.create(file_ids=[x]), f, "file-"),
        ]
        if actor.stores:
            mine = rng.choice(sorted(actor.stores))
            choices.append((lambda x, s=mine: sdk.vector_stores.files.create(s, file_id=x), f,
                            "file-"))  # fmt: skip
    search: Any = [{"type": "file_search"}]
    for s in other.stores:
        choices += [
            (lambda x: sdk.vector_stores.retrieve(x), s, "vs_"),
            (lambda x: sdk.vector_stores.search(x, query="notes"), s, "vs_"),
            (lambda x: sdk.vector_stores.files.list(x), s, "vs_"),
            (lambda x: sdk.vector_stores.delete(x), s, "vs_"),
            (lambda x: sdk.beta.assistants.create(model="gpt-4o", tools=search,
                tool_resources={"file_search": {"vector_store_ids": [x]}}), s, "vs_"),
        ]  # fmt: skip
    if choices:
        call, foreign, prefix = rng.choice(choices)
        like_missing(call, foreign, prefix)


def _events(system: System, actor: Tenant, thread_id: str, run_id: str) -> None:
    """A run's stream, resumed with `Last-Event-ID`; raises the error it answers."""
    url = f"{system.api_url}/threads/{thread_id}/runs/{run_id}/events"
    headers = {"OpenAI-Beta": "assistants=v2", "Authorization": f"Bearer {actor.key}",
               "Last-Event-ID": "0-0"}  # fmt: skip
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        body = response.read()
        assert b"event:" not in body
        if response.status_code == 404:
            raise openai.NotFoundError(response.json()["error"]["message"], response=response,
                                       body=None)  # fmt: skip
        raise AssertionError(f"{response.status_code}: {body[:200]!r}")


def _lists_hold_only_own(actor: Tenant, other: Tenant) -> None:
    """Every listing shows exactly the caller's objects; another's id is no cursor."""
    sdk = actor.sdk
    assert ids(sdk.beta.assistants.list(limit=100)) == actor.assistants
    assert ids(sdk.files.list()) == actor.files
    assert ids(sdk.vector_stores.list(limit=100)) == actor.stores
    for foreign in sorted(other.assistants)[:3]:
        after = sdk.beta.assistants.list(after=foreign)
        never = sdk.beta.assistants.list(after="asst_neverexisted")
        assert [a.id for a in after.data] == [a.id for a in never.data]


@pytest.mark.slow
def test_two_projects_never_see_each_other(pair: tuple[Tenant, Tenant], system: System) -> None:
    rng = random.Random(SEED)
    a, b = pair
    foreign_calls = 0
    for _ in range(OPERATIONS):
        actor, other = (a, b) if rng.random() < 0.5 else (b, a)
        if rng.random() < 0.5:
            _own(actor, rng)
        else:
            _foreign(actor, other, rng, system)
            foreign_calls += 1
    print(f"\n{OPERATIONS} operations, {foreign_calls} aimed at the other project; "
          f"a: {len(a.threads)} threads, {len(a.runs)} runs; "
          f"b: {len(b.threads)} threads, {len(b.runs)} runs")  # fmt: skip
    assert foreign_calls > 20
    for actor, other in ((a, b), (b, a)):
        _lists_hold_only_own(actor, other)
        for thread_id in actor.threads:  # the other project wrote nothing into them
            texts = [m.content[0].text.value for m in  # type: ignore[union-attr]
                     actor.sdk.beta.threads.messages.list(thread_id, limit=100).data]  # fmt: skip
            assert "intrude" not in texts


def test_an_event_names_its_project(pair: tuple[Tenant, Tenant], tap: KafkaTap) -> None:
    a, b = pair
    assistant = a.sdk.beta.assistants.create(model="gpt-4o").id
    thread = a.sdk.beta.threads.create().id
    # In its own project, an event is answered.
    tap.publish({**user_message(thread, assistant, "from kafka"), "project": a.name}, key=thread)
    wait_until(lambda: [e for e in tap.events(thread) if e["type"] == "thread.run.completed"])

    def rejected(event: dict[str, Any]) -> str:
        tap.publish(event, key=event["subject"])
        letter = wait_until(lambda: [d for d in tap.dead_letters()
                                     if d["event_id"] == event["id"]])[0]  # fmt: skip
        return str(letter["reason"])

    # Naming another project: the thread and assistant of this one are not there.
    b_assistant = b.sdk.beta.assistants.create(model="gpt-4o").id
    assert "No thread found" in rejected(
        {**user_message(thread, b_assistant, "intrude"), "project": b.name}
    )
    assert "No assistant found" in rejected(
        {**user_message(thread, assistant, "intrude"), "project": b.name}
    )
    other_thread = f"thread_{uuid.uuid4().hex}"
    assert "No assistant found" in rejected(
        {**user_message(other_thread, assistant, "intrude"), "project": b.name}
    )
    assert "No project named" in rejected(
        {**user_message(other_thread, assistant, "intrude"), "project": "no-such-project"}
    )
    # Without `project`, the event acts in the project `default`.
    assert "No assistant found" in rejected(user_message(other_thread, assistant, "intrude"))
    texts = [m.content[0].text.value for m in  # type: ignore[union-attr]
             a.sdk.beta.threads.messages.list(thread, order="asc").data]  # fmt: skip
    assert texts == ["from kafka", "Echo: from kafka"]
    like_missing(lambda x: b.sdk.beta.threads.retrieve(x), other_thread, "thread_")


def test_what_an_api_just_created_is_its_projects_at_the_first_request(
    pair: tuple[Tenant, Tenant],
) -> None:
    """The door keeps the project of each thread and store the API creates (no lookup at the
    first request about it): the other project's first request finds nothing, the creator's
    finds it."""
    a, b = pair
    assistant = a.sdk.beta.assistants.create(model="gpt-4o").id
    thread = a.sdk.beta.threads.create().id
    store = a.sdk.vector_stores.create(name="kept").id
    run = a.sdk.beta.threads.create_and_run(
        assistant_id=assistant, thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    like_missing(lambda x: b.sdk.beta.threads.messages.list(x), thread, "thread_")
    like_missing(lambda x: b.sdk.vector_stores.files.list(x), store, "vs_")
    like_missing(lambda x: b.sdk.beta.threads.runs.retrieve(run.id, thread_id=x),
                 run.thread_id, "thread_")  # fmt: skip
    assert a.sdk.beta.threads.messages.list(thread).data == []
    assert a.sdk.vector_stores.files.list(store).data == []
    assert a.sdk.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id).id == run.id


def test_a_deleted_threads_id_taken_by_another_project_is_gone_for_the_first(
    pair: tuple[Tenant, Tenant], tap: KafkaTap
) -> None:
    """An inbound event may create a thread under the id of one another project deleted: the
    door forgets the old owner when the thread is deleted, so the first project's key reaches
    nothing of the new thread."""
    a, b = pair
    thread = a.sdk.beta.threads.create().id
    assert a.sdk.beta.threads.messages.list(thread).data == []  # the door knows it as a's
    a.sdk.beta.threads.delete(thread)
    b_assistant = b.sdk.beta.assistants.create(model="gpt-4o").id
    tap.publish({**user_message(thread, b_assistant, "mine now"), "project": b.name}, key=thread)
    done = wait_until(
        lambda: [e for e in tap.events(thread) if e["type"] == "thread.run.completed"]
    )
    run_id = done[0]["data"]["id"]
    like_missing(lambda x: a.sdk.beta.threads.runs.retrieve(run_id, thread_id=x), thread, "thread_")
    like_missing(lambda x: a.sdk.beta.threads.messages.list(x), thread, "thread_")
    assert b.sdk.beta.threads.runs.retrieve(run_id, thread_id=thread).status == "completed"
