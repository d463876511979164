"""Attribute filters of a search (comparison and compound) as a parameterised SQL condition."""

from typing import assert_never

from schemas.vector_stores import ComparisonFilter, CompoundFilter, Filter

_ORDER_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class Params:
    """Positional parameters of one statement, numbered from `start`."""

    def __init__(self, start: int):
        self._start = start
        self.values: list[object] = []

    def add(self, value: object) -> str:
        """A placeholder for `value`."""
        self.values.append(value)
        return f"${self._start + len(self.values) - 1}"


def condition(node: Filter, params: Params, column: str = "attributes") -> str:
    """SQL true for the rows whose `column` (a jsonb map) passes the filter.

    Values are compared as JSON: numbers with numbers (so 2024 equals 2024.0), strings with
    strings (ordering comparisons on strings are lexicographic, which orders ISO dates), and
    booleans with booleans. A missing attribute fails every comparison except `ne` and `nin`.
    """
    if isinstance(node, CompoundFilter):
        joiner = " AND " if node.type == "and" else " OR "
        return "(" + joiner.join(condition(f, params, column) for f in node.filters) + ")"
    return _comparison(node, params, column)


def _comparison(node: ComparisonFilter, params: Params, column: str) -> str:
    attribute = f"({column} -> {params.add(node.key)})"
    value = node.value
    match node.type:
        case "eq":
            return f"({attribute} = {params.add(value)}::jsonb)"
        case "ne":
            return f"({attribute} IS DISTINCT FROM {params.add(value)}::jsonb)"
        case "in" | "nin":
            values = value if isinstance(value, list) else [value]
            found = f"coalesce({attribute} = ANY({params.add(values)}::jsonb[]), false)"
            return f"({found})" if node.type == "in" else f"(NOT {found})"
        case "gt" | "gte" | "lt" | "lte":
            op = _ORDER_OPS[node.type]
            if isinstance(value, bool | list):
                raise ValueError(f"{node.type!r} compares numbers or strings, not {value!r}")
            if isinstance(value, str):
                return (
                    f"(jsonb_typeof({attribute}) = 'string'"
                    f" AND ({attribute} #>> '{{}}') {op} {params.add(value)})"
                )
            return (
                f"(jsonb_typeof({attribute}) = 'number'"
                f" AND ({attribute} #>> '{{}}')::numeric {op} {params.add(value)}::numeric)"
            )
        case _:
            assert_never(node.type)
