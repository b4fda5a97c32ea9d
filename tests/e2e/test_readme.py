"""The README's Python examples run as written (against the test daemon)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:7420"


def blocks() -> list[str]:
    found = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in found if "Client.connect(" in b and "await " not in b]


def test_readme_examples_run_in_order(daemon, capsys) -> None:
    """A reader runs them top to bottom: later examples may use what earlier ones wrote."""
    assert len(blocks()) >= 3
    for index, block in enumerate(blocks()):
        code = block.replace(DEFAULT_ADDRESS, daemon.address)
        exec(compile(code, f"README.md example {index}", "exec"), {})
        out = capsys.readouterr().out
        assert out.strip(), f"example {index} printed nothing"
        if "claims.hold" in code:
            assert "still mine: True" in out, out
        if "context.inbox" in code:
            assert "reviewing {'doc': 'doc-42'}" in out, out
