"""One ``ast.parse`` at a time in the test process (a CPython 3.11.0-3.11.7 bug).

Before 3.11.8 the AST constructor kept its recursion counter in interpreter-wide state
(python/cpython#106905). Two threads building ASTs at once (pytest formatting a failure or
rewriting an assertion on the main thread; 3.11's ``traceback`` placing its ``^^^`` carets with
``ast.parse`` while the in-process daemon logs an exception on its own thread; a garbage
collection running a finalizer in the middle of either) corrupt it, and the next parse raises
``SystemError: AST constructor recursion depth mismatch``, which crashed a whole run in
pytest's reporting. ``tests/unit/test_ast_guard.py`` reproduces the race and pins the guard.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any

# Reentrant: a finalizer run by a collection inside a parse may format a traceback itself.
_PARSE_LOCK = threading.RLock()
AFFECTED = sys.version_info < (3, 11, 8)


def serialized(parse: Any) -> Any:
    """Wrap *parse* so that only one thread runs it at a time."""

    @functools.wraps(parse)
    def parse_serialized(*args: Any, **kwargs: Any) -> Any:
        with _PARSE_LOCK:
            return parse(*args, **kwargs)

    parse_serialized.__wrapped_parse__ = parse  # type: ignore[attr-defined]
    return parse_serialized


def install() -> None:
    """Route every ``ast.parse`` caller (pytest, traceback, hypothesis) through the lock."""
    if AFFECTED and not hasattr(ast.parse, "__wrapped_parse__"):
        ast.parse = serialized(ast.parse)


install()
