"""Two intakes for one new thread at once (two run-starters, records keyed other than by their
thread): the thread is created once, and the second finds it, locked, without a second
`thread.created`.

This race cannot be timed through Kafka, so the test holds the first transaction open itself,
on the system's Postgres, with the run-starter's own statements (`threads.ensure`).
"""

import asyncio

from services.core import db
from services.core.ids import new_id
from services.core.store import threads
from tests.system import System


async def _waiting_on_a_lock(conn: object, pid: int) -> bool:
    row = await conn.fetchrow(  # type: ignore[attr-defined]
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid
    )
    return row is not None and row["wait_event_type"] == "Lock"


async def test_a_thread_created_while_the_intake_waited_is_found_not_created_again(
    system: System,
) -> None:
    thread_id = new_id("thread")
    first = await db.connect(system.infra.database_url)
    second = await db.connect(system.infra.database_url)
    third = await db.connect(system.infra.database_url)
    cleanup: list[asyncio.Task[tuple[str, list[str], bool]]] = []
    try:
        opened = first.transaction()
        await opened.start()
        made = await threads.ensure(first, thread_id, cause="evt_first")
        assert [p[2]["type"] for p in first.outbox_pending] == ["thread.created"]

        async def the_second_intake() -> tuple[str, list[str], bool]:
            async with second.transaction():
                found = await threads.ensure(second, thread_id, cause="evt_second")
                kinds = [p[2]["type"] for p in second.outbox_pending]
                # Locked for this transaction: another session cannot take the row now.
                free = await third.fetch(
                    "SELECT id FROM threads WHERE id = $1 FOR UPDATE SKIP LOCKED", thread_id
                )
                second.outbox_pending.clear()  # nothing of this test goes out
                return found.id, kinds, free == []

        racing = asyncio.create_task(the_second_intake())
        cleanup.append(racing)
        waiting_pid = second.get_server_pid()
        for _ in range(200):  # the second insert waits for the first transaction
            if await _waiting_on_a_lock(third, waiting_pid):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the second intake never waited on the first")
        assert not racing.done()
        first.outbox_pending.clear()
        await opened.commit()

        found, kinds, locked = await asyncio.wait_for(racing, 10)
        assert found == made.id == thread_id
        assert kinds == []  # no second thread.created
        assert locked
        rows = await first.fetchval("SELECT count(*) FROM threads WHERE id = $1", thread_id)
        assert rows == 1
    finally:
        for task in cleanup:  # a failed assertion above leaves it waiting
            task.cancel()
        await asyncio.gather(*cleanup, return_exceptions=True)
        await first.execute("DELETE FROM threads WHERE id = $1", thread_id)
        await first.close()
        await second.close()
        await third.close()
