"""The agreements guide's example runs as written (against the test daemon)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "agreements.md"
DEFAULT_ADDRESS = "127.0.0.1:7420"


def test_two_agents_agree_before_both_act(daemon, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0].replace(DEFAULT_ADDRESS, daemon.address)
    exec(compile(code, "docs/agreements.md example", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "refunds-agent acts: True",
        "risk-agent acts: True",
        "status: refunding",
        "claimed both: True",
    ], out
