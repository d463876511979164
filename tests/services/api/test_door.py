"""The door in-process, over the suite's Postgres: that the run poll is answered without the
app behind it (and everything else is not), and that the door keeps the project of what the
API creates. `test_run_poll.py` checks over HTTP that the answers are the app's."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from openai import OpenAI
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from services.api import auth, limits
from services.api.door import Door
from services.api.settings import Settings
from services.core import db, projects
from tests.system import API_KEY, System


@pytest.fixture
async def pool(system: System) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(system.infra.database_url, size=2)
    yield pool
    await pool.close()


class App:
    """What stands behind the door: records the paths it is asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.asked.append(f"{scope['method']} {scope['path']}")
        await PlainTextResponse("the app")(scope, receive, send)


async def knock(
    door: Door, pool: asyncpg.Pool, method: str, path: str, **headers: str
) -> tuple[int, bytes]:
    """One request through the door; its status and body."""
    settings = Settings(database_url="postgresql://unused/db", kafka_bootstrap_servers="unused")
    state = SimpleNamespace(runtime=SimpleNamespace(pool=pool), settings=settings)
    sent: list[Message] = []
    scope: dict[str, Any] = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
        "app": SimpleNamespace(state=state),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await door(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_the_door_answers_a_poll_and_passes_the_rest(
    pool: asyncpg.Pool, client: OpenAI
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    app = App()
    door = Door(app, gate=auth.Gate(), limiter=limits.RateLimiter(0, 0))
    poll = f"/v1/threads/{run.thread_id}/runs/{run.id}"
    key = {"authorization": f"Bearer {API_KEY}"}
    beta = {**key, "openai_beta": "assistants=v2"}

    status, body = await knock(door, pool, "GET", poll, **beta)
    assert (status, json.loads(body)["id"], json.loads(body)["status"]) == (
        200,
        run.id,
        "completed",
    )
    missing = f"/v1/threads/{run.thread_id}/runs/run_nope"
    status, body = await knock(door, pool, "GET", missing, **beta)
    assert (status, json.loads(body)["error"]["message"]) == (
        404,
        "No run found with id 'run_nope'.",
    )
    assert app.asked == []  # neither reached the app

    await knock(door, pool, "GET", poll, **key)  # no beta header: the app writes the error
    await knock(door, pool, "GET", poll, **beta, content_length="5")  # a body: the app's limit
    await knock(door, pool, "POST", poll, **beta)
    await knock(door, pool, "GET", f"{poll}/steps", **beta)
    assert app.asked == [f"GET {poll}", f"GET {poll}", f"POST {poll}", f"GET {poll}/steps"]


class Counted:
    """A pool that counts the connections asked of it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.asked = 0

    def acquire(self) -> Any:
        self.asked += 1
        return self.pool.acquire()


async def created_then_rolled_back(conn: asyncpg.Connection, gate: auth.Gate, thread: str) -> None:
    async with conn.transaction():
        gate.created_in(conn, "threads", thread)
        raise RuntimeError("rolled back: never created, nothing kept")


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 10 s")


@pytest.fixture
async def gate(system: System) -> AsyncIterator[auth.Gate]:
    """A gate whose listener hears Postgres (without it the gate keeps nothing)."""
    gate = auth.Gate()
    listening = asyncio.create_task(gate.listen(system.infra.database_url))
    await until(lambda: gate._listening)
    yield gate
    listening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listening


async def test_the_door_keeps_the_project_of_what_the_api_creates(
    pool: asyncpg.Pool, client: OpenAI, gate: auth.Gate
) -> None:
    thread = client.beta.threads.create()
    async with pool.acquire() as conn:
        owner = await conn.fetchval("SELECT project_id FROM threads WHERE id = $1", thread.id)
    counted = Counted(pool)
    path = f"/v1/threads/{thread.id}/messages"
    projects.CURRENT.set(owner)
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await created_then_rolled_back(conn, gate, thread.id)
        async with conn.transaction():
            gate.created_in(conn, "threads", "thread_made_here")
    assert await gate.foreign_parent(counted, path, owner) is None
    assert counted.asked == 1  # not kept: asked
    made = await gate.foreign_parent(counted, "/v1/threads/thread_made_here/runs", owner)
    assert (made, counted.asked) == (None, 1)  # kept at commit: not asked
    assert await gate.foreign_parent(counted, path, owner) is None
    assert counted.asked == 1  # kept once asked
    # Kept as another's (the id may have been created again elsewhere): asked before the 404.
    foreign = await gate.foreign_parent(counted, path, "proj_someone_else")
    assert foreign is not None
    assert (foreign.status_code, counted.asked) == (404, 2)
    # Deleted: forgotten when Postgres says so, and asked again.
    client.beta.threads.delete(thread.id)
    await until(lambda: ("threads", thread.id) not in gate._parents)
    gone = await gate.foreign_parent(counted, path, owner)
    assert gone is not None
    assert (gone.status_code, counted.asked) == (404, 3)
