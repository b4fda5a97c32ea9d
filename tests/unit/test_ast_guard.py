"""The test process parses one AST at a time (tests/fix_ast.py), so 3.11's race cannot crash it."""

from __future__ import annotations

import ast
import difflib
import gc
import random
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fix_ast

SOURCE = Path(textwrap.__file__).read_text()


@pytest.fixture
def busy_collections() -> Iterator[None]:
    """Make every garbage collection run Python code, as grpc and asyncio finalizers do."""

    def run_python(phase: str, info: dict[str, Any]) -> None:
        lines = [f"{random.randint(0, 9)}\n" for _ in range(50)]
        list(difflib.unified_diff(lines, lines[::-1]))

    gc.callbacks.append(run_python)
    try:
        yield
    finally:
        gc.callbacks.remove(run_python)


def parse_in_threads(parse: Callable[..., ast.AST], threads: int = 12, each: int = 6) -> list[str]:
    errors: list[str] = []

    def work() -> None:
        try:
            for _ in range(each):
                parse(SOURCE)
        except SystemError as exc:
            errors.append(str(exc))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def test_the_guard_is_installed_where_the_bug_exists() -> None:
    assert hasattr(ast.parse, "__wrapped_parse__") == fix_ast.AFFECTED


def test_concurrent_parses_do_not_corrupt_the_ast_constructor(busy_collections: None) -> None:
    assert parse_in_threads(ast.parse) == []


def test_a_parse_from_a_collection_inside_a_parse_is_deferred() -> None:
    """A gc callback (or finalizer) that parses, run by a collection mid-construction."""

    def parse_too(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            ast.parse("x = [1, (2, 3)]")

    gc.callbacks.append(parse_too)
    errors = []
    try:
        for _ in range(60):
            try:
                ast.parse(SOURCE)
            except SystemError as exc:
                errors.append(str(exc))
    finally:
        gc.callbacks.remove(parse_too)
    assert errors == []
