"""Which project a connection acts in (migration 0009 explains the model).

The API scopes every pooled connection, on each acquire, to the project of the request being
served (`CURRENT`, set by the key check), or to `NOBODY` outside a request. SQL over the
project-owned tables (assistants, threads, files, vector stores) keeps to `visible(project_id)`;
new rows take the connection's project. Workers' connections are not scoped.
"""

from contextvars import ContextVar

import asyncpg

NOBODY = "none"
"""The scope of an API connection outside a request: no project, so no rows."""

DEFAULT = "proj_default"
"""The project of everything while no API key exists, and of objects from before projects."""

DEFAULT_NAME = "default"

MINE = "visible(project_id)"
"""SQL: the row belongs to the connection's project (or the connection is not scoped)."""

CURRENT: ContextVar[str] = ContextVar("threadbus_project", default=NOBODY)
"""The project of the request this task serves."""


async def scope_to_current(conn: asyncpg.Connection) -> None:
    """Pool `setup` of the API: scope the connection to the current request's project.

    A session setting outlives the request (pool release resets nothing), so a connection
    that already acts in that project needs no round trip.
    """
    project, known = CURRENT.get(), conn.session_settings
    if known.get("threadbus.project") != project:
        await conn.execute("SELECT set_config('threadbus.project', $1, false)", project)
        known["threadbus.project"] = project


async def act_in(conn: asyncpg.Connection, name: str) -> bool:
    """Scope this transaction (of a worker) to the project named `name`, as a request of it
    would be, in one statement; False (and nothing scoped) when there is no such project."""
    scoped = await conn.fetchval(
        "SELECT set_config('threadbus.project', id, true) FROM projects WHERE name = $1", name
    )
    return scoped is not None
