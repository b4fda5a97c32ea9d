"""One ``ast.parse`` at a time, never interrupted, in the test process (CPython < 3.11.8).

Before 3.11.8 the AST constructor kept its recursion counter in interpreter-wide state
(python/cpython#106905). A second AST built while one is under construction corrupts it, and
the outer parse raises ``SystemError: AST constructor recursion depth mismatch``, which crashed
a whole run in pytest's reporting. The second one comes from another thread (pytest rewriting
an assertion or formatting a failure on the main thread while the in-process daemon logs an
exception on its own: 3.11's ``traceback`` places its ``^^^`` carets with ``ast.parse``), or
from the same thread, when a garbage collection inside the constructor runs a finalizer or a
``gc`` callback that formats a traceback. So each parse holds a lock and runs with the
collector paused. ``tests/unit/test_ast_guard.py`` reproduces both races and pins the guard.
"""

from __future__ import annotations

import ast
import functools
import gc
import sys
import threading
from typing import Any

# Reentrant: a finalizer run by a collection inside a parse may format a traceback itself.
_PARSE_LOCK = threading.RLock()
AFFECTED = sys.version_info < (3, 11, 8)


def serialized(parse: Any) -> Any:
    """Wrap *parse*: one thread at a time, with the garbage collector paused."""

    @functools.wraps(parse)
    def parse_serialized(*args: Any, **kwargs: Any) -> Any:
        with _PARSE_LOCK:
            collecting = gc.isenabled()
            gc.disable()  # no finalizer or gc callback may run (and parse) mid-construction
            try:
                return parse(*args, **kwargs)
            finally:
                if collecting:
                    gc.enable()

    parse_serialized.__wrapped_parse__ = parse  # type: ignore[attr-defined]
    return parse_serialized


def install() -> None:
    """Route every ``ast.parse`` caller (pytest, traceback, hypothesis) through the lock."""
    if AFFECTED and not hasattr(ast.parse, "__wrapped_parse__"):
        ast.parse = serialized(ast.parse)


install()
