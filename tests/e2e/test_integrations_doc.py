"""docs/integrations.md: the LangGraph example runs as written against a real daemon."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def test_langgraph_example_runs(daemon, monkeypatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    [example] = [b for b in blocks if "CoorddSaver.from_addr" in b]
    monkeypatch.setenv("COORDD_ADDR", daemon.address)
    # A module of its own: LangGraph reads the state's type hints from its module.
    module = types.ModuleType("integrations_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(example, "docs/integrations.md LangGraph example", "exec"), module.__dict__)
    assert capsys.readouterr().out.strip() == "['note 1: 1 facts', 'note 2: 2 facts']"


def test_mcp_config_names_real_flags() -> None:
    from coordd.cli import parser

    text = DOC.read_text()
    mcp = parser()._subparsers._group_actions[0].choices["mcp"]  # type: ignore[union-attr]
    flags = {o for a in mcp._actions for o in a.option_strings}
    for flag in re.findall(r"coordd mcp[^`\n]*", text):
        for used in re.findall(r"--[a-z-]+", flag):
            assert used in flags, f"docs use {used}, which coordd mcp does not take"
