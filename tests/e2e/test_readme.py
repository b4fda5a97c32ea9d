"""The README's Python examples run as written (against the test daemon)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:7420"


def blocks() -> list[str]:
    found = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in found if "Client.connect(" in b and "await " not in b]


@pytest.mark.parametrize("index", range(len(blocks())))
def test_readme_example_runs(index: int, daemon, capsys) -> None:
    code = blocks()[index].replace(DEFAULT_ADDRESS, daemon.address)
    exec(compile(code, f"README.md example {index}", "exec"), {})
    out = capsys.readouterr().out
    assert "still mine: True" in out, out
