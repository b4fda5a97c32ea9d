"""LangGraph's search filters on item values, evaluated on the client.

The same operators LangGraph's stores accept: a plain value is equality (objects and arrays
compare structurally), and ``{"$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte": v}`` compare
numbers numerically and strings lexicographically (PostgresStore's behaviour; a number and a
string never compare). Nested objects in a filter match nested fields.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def matches(value: dict[str, Any], filter: dict[str, Any]) -> bool:
    """True if *value* satisfies every condition of *filter*."""
    return all(_match(value.get(k), f) for k, f in filter.items())


def _match(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_apply(actual, op, v) for op, v in wanted.items())
        return isinstance(actual, dict) and all(_match(actual.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(wanted)
            and all(_match(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _apply(actual: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(actual == operand)
    if op == "$ne":
        return bool(actual != operand)
    compare = _ORDER.get(op)
    if compare is None:
        raise ValueError(
            f"unsupported filter operator {op!r}: use one of $eq, $ne, {', '.join(_ORDER)}"
        )
    if (_number(actual) and _number(operand)) or (
        isinstance(actual, str) and isinstance(operand, str)
    ):
        return compare(actual, operand)
    return False
