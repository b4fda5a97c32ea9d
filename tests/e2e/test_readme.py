"""Every Python example in the README runs as written, in order, on a fresh daemon."""

from __future__ import annotations

import ast
import asyncio
import re
import threading
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:7420"
# What a reader sees when an example works (beyond printing something at all).
EXPECTED = {
    "idempotency.once": "still mine: True",
    "context.inbox": "reviewing {'doc': 'doc-42'}",
    "client.gate": "charged order-7 with key order-7",
}


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def run_example(code: str, name: str, timeout: float = 30) -> None:
    """Run one example on its own thread (top-level ``await`` allowed), as a script would."""
    compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    failure: list[BaseException] = []

    def script() -> None:
        try:
            result: Any = eval(compiled, {"__name__": "__main__"})
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=script, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{name} did not finish within {timeout} s (it blocks)"
    if failure:
        raise failure[0]


def test_every_readme_example_runs_in_order_on_a_fresh_daemon(
    scratch_dsn, start_daemon, capsys
) -> None:
    """A reader runs them top to bottom: later examples may use what earlier ones wrote."""
    fresh = start_daemon(dsn=scratch_dsn)  # its own empty database (stopped before it is dropped)
    blocks = python_blocks()
    assert len(blocks) >= 4
    for index, block in enumerate(blocks):
        name = f"README.md Python example {index + 1}"
        assert DEFAULT_ADDRESS in block, f"{name} does not connect to the default address"
        run_example(block.replace(DEFAULT_ADDRESS, fresh.address), name)
        out = capsys.readouterr().out
        assert out.strip(), f"{name} printed nothing"
        for marker, expected in EXPECTED.items():
            if marker in block:
                assert expected in out, f"{name}: {out}"


def test_the_reviewer_example_alone_ends_on_an_empty_daemon(scratch_dsn, start_daemon) -> None:
    """Run first, with nothing posted yet, it still ends (it used to wait for an ack forever)."""
    fresh = start_daemon(dsn=scratch_dsn)
    [reviewer] = [b for b in python_blocks() if "context.inbox" in b]
    run_example(reviewer.replace(DEFAULT_ADDRESS, fresh.address), "the reviewer example")
