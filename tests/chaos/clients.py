"""The chaos test's clients: a progress monitor over Postgres, and a resuming stream client."""

import asyncio
import threading
import time

import asyncpg
import httpx

from tests.sse import events
from tests.system import HEADERS

TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")


class Progress:
    """Counts each thread's finished runs, polling Postgres (and riding out its restart)."""

    def __init__(self, dsn: str):
        self._dsn = dsn
        self._done: dict[str, int] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._poll()), daemon=True)

    def start(self) -> "Progress":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def finished(self, thread_id: str | None = None) -> int:
        with self._lock:
            if thread_id is not None:
                return self._done.get(thread_id, 0)
            return sum(self._done.values())

    def wait(self, thread_id: str, count: int, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._done.get(thread_id, 0) >= count, timeout)

    async def _poll(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self._dsn, timeout=5)
                rows = await conn.fetch(
                    "SELECT thread_id, count(*) AS n FROM runs WHERE status = ANY($1::text[])"
                    " GROUP BY thread_id",
                    list(TERMINAL),
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError):  # fmt: skip
                # A restart can leave the connection mid-protocol ("another operation is in
                # progress"): drop it, whatever it raised, and connect again.
                if conn is not None:
                    conn.terminate()
                conn = None
                await asyncio.sleep(0.5)
                continue
            with self._lock:
                self._done = {r["thread_id"]: r["n"] for r in rows}
                self._lock.notify_all()
            await asyncio.sleep(0.2)
        if conn is not None:
            await conn.close()


def wait_for_turn(progress: Progress, thread_id: str, count: int) -> None:
    """Until the thread has `count` finished runs (a run survives anything, so it will)."""
    if not progress.wait(thread_id, count, timeout=300):
        raise TimeoutError(f"{thread_id} has {progress.finished(thread_id)} of {count} runs")


class StreamingClient:
    """Creates each run with `stream: true` and reads it to the end, across API restarts.

    A broken connection is resumed at `GET .../runs/{id}/events` with `Last-Event-ID`; a create
    whose answer was lost is found by listing the thread's runs, never sent twice. Every SSE id
    it is given is kept, to show that no event arrives twice.
    """

    def __init__(self, api_url: str, thread_id: str, assistant_id: str):
        self._http = httpx.Client(base_url=api_url, headers=HEADERS, timeout=30)
        self._thread = thread_id
        self._assistant = assistant_id
        self.ids: list[str] = []
        self.completed = 0
        self.resumes = 0

    def run(self, text: str, nth: int) -> None:
        """Stream the thread's `nth` run, which sends `text`, until `done`."""
        run_id, last = None, None
        body = {"assistant_id": self._assistant, "stream": True,
                "additional_messages": [{"role": "user", "content": text}]}  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if run_id is None:
                    run_id = self._created(nth)
                if run_id is None:
                    request = self._http.build_request(
                        "POST", f"/threads/{self._thread}/runs", json=body
                    )
                else:
                    self.resumes += 1
                    headers: dict[str, str] = {"Last-Event-ID": last} if last else {}
                    request = self._http.build_request(
                        "GET", f"/threads/{self._thread}/runs/{run_id}/events", headers=headers
                    )
                response = self._http.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise httpx.TransportError(f"HTTP {response.status_code}")
                    for event in events(response.iter_lines()):
                        if event.event == "thread.run.created":
                            run_id = event.json()["id"]
                        if event.event == "done":
                            self.completed += 1
                            return
                        if event.event == "error":
                            break  # the server's stream broke: resume
                        if event.id is not None:
                            self.ids.append(event.id)
                            last = event.id
                finally:
                    response.close()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"run {nth} of {self._thread} never ended its stream")

    def _created(self, nth: int) -> str | None:
        """The thread's `nth` run if it exists (a create whose answer was lost)."""
        listed = self._http.get(f"/threads/{self._thread}/runs", params={"order": "asc"})
        if listed.status_code != 200:
            raise httpx.TransportError(f"HTTP {listed.status_code}")
        runs = listed.json()["data"]
        return str(runs[nth - 1]["id"]) if len(runs) >= nth else None
