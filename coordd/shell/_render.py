"""Output: aligned tables for people, JSON for scripts, from the client's result types."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ._flags import connect

if TYPE_CHECKING:
    import argparse

    from coordd_client import AsyncClient

T = TypeVar("T")
Page = Callable[["AsyncClient", str], Awaitable[tuple[list[T], str]]]
"""Given the client and a cursor ("" first), one page of items and the next cursor."""

# A table cell longer than this is cut (with "..."); `get` and --json show everything.
CELL_WIDTH = 60


def jsonable(obj: Any) -> Any:
    """The client's dataclasses (and lists of them) as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    return obj


def print_json(obj: Any, *, compact: bool = False) -> None:
    """Print *obj* as JSON: indented, or one line (for streams: one JSON object per line)."""
    if compact:
        text = json.dumps(jsonable(obj), separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(jsonable(obj), indent=2, ensure_ascii=False)
    print(text, flush=compact)


def when(value: datetime | None) -> str:
    """A time as people read it in a table: UTC, to the second."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def compact_json(value: Any) -> str:
    """A JSON value on one line (values, contents and change data in tables)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def cell(value: Any) -> str:
    text = " ".join(str(value).split()) if value not in ("", None) else "-"
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 3] + "..."


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """kubectl's layout: upper-case headers, columns padded to their widest cell."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *cells]:
        line = "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        print(line.rstrip())


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """One object as ``name: value`` lines (``get`` commands)."""
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        text = value if isinstance(value, str) else compact_json(value)
        print(f"{name + ':':<{width + 1}} {text if text != '' else '-'}")


def print_list(
    items: Sequence[T],
    *,
    as_json: bool,
    headers: Sequence[str],
    row: Callable[[T], Sequence[Any]],
    empty: str,
) -> None:
    """A list command's output: JSON, a table, or (nothing found) a remark on stderr."""
    if as_json:
        print_json(list(items))
    elif items:
        print_table(headers, [row(item) for item in items])
    else:
        note(empty)


async def collect(fetch: Callable[[str], Awaitable[tuple[list[T], str]]], limit: int) -> list[T]:
    """Every page from *fetch* (given a cursor, returns items and the next cursor, "" at the
    end), or the first *limit* items (0: all)."""
    items: list[T] = []
    cursor = ""
    while True:
        page, cursor = await fetch(cursor)
        items.extend(page)
        if not cursor or (limit and len(items) >= limit):
            return items[:limit] if limit else items


async def read_pages(args: argparse.Namespace, page: Page[T]) -> tuple[list[T], str]:
    """Connect as the flags say and read every page (or ``--limit`` items); also the agent id
    they were read as."""
    async with await connect(args) as client:
        return await collect(lambda cursor: page(client, cursor), args.limit), client.agent_id


async def print_pages(
    args: argparse.Namespace,
    page: Page[T],
    *,
    headers: Sequence[str],
    row: Callable[[T], Sequence[Any]],
    empty: str,
) -> int:
    """A list command: every page (or ``--limit`` items) as a table, or JSON with ``--json``."""
    items, _ = await read_pages(args, page)
    print_list(items, as_json=args.json, headers=headers, row=row, empty=empty)
    return 0


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr, so pipes carry only data)."""
    print(message, file=sys.stderr)
