"""Cursor pages over any object table, ordered by insertion sequence (timestamps tie)."""

from collections.abc import Callable
from typing import Literal, TypeVar

import asyncpg

from schemas.common import Page

T = TypeVar("T")
Order = Literal["asc", "desc"]


async def page(
    conn: asyncpg.Connection,
    *,
    table: str,
    where: str,
    args: list[object],
    render: Callable[[dict[str, object]], T],
    limit: int,
    order: Order,
    after: str | None,
    before: str | None,
) -> Page[T]:
    """One page of `table` rows matching `where` (which uses `$1..$n` of `args`).

    `after` continues past an id in the chosen order; `before` returns the objects closest
    to an id on the other side, still in the chosen order. A cursor is looked up among the
    rows `where` selects, so ids need only be unique within one listing.
    """
    forward = order == "asc"
    clauses = [where]
    scope = f" AND ({where})"  # a cursor names an object of the same listing
    params = list(args)
    scan_ascending = forward
    if after is not None:
        params.append(after)
        op = ">" if forward else "<"
        clauses.append(f"seq {op} (SELECT seq FROM {table} WHERE id = ${len(params)}{scope})")
    if before is not None:
        params.append(before)
        op = "<" if forward else ">"
        clauses.append(f"seq {op} (SELECT seq FROM {table} WHERE id = ${len(params)}{scope})")
        if after is None:
            scan_ascending = not forward
    params.append(limit + 1)
    direction = "ASC" if scan_ascending else "DESC"
    rows = await conn.fetch(
        f"SELECT * FROM {table} WHERE {' AND '.join(clauses)}"
        f" ORDER BY seq {direction} LIMIT ${len(params)}",
        *params,
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    if scan_ascending != forward:
        rows = list(reversed(rows))
    data = [render(dict(r)) for r in rows]
    ids = [str(r["id"]) for r in rows]
    return Page[T](
        data=data,
        first_id=ids[0] if ids else None,
        last_id=ids[-1] if ids else None,
        has_more=has_more,
    )
