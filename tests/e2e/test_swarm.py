"""examples/swarm.py runs against a real daemon, survives what it injects, and its own checks
can fail."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.fix_daemon import DaemonThread

SWARM = Path(__file__).resolve().parents[2] / "examples" / "swarm.py"


def load_swarm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("swarm_example", SWARM)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def figures(out: str) -> dict[str, str]:
    """The summary's "  name   value" lines (not the "  doc-...: what happened" ones)."""
    lines = [line for line in out.splitlines() if line.startswith("  ") and "  " in line.strip()]
    rows = [line.strip().rsplit("  ", 1) for line in lines]
    return {name.strip(): value.strip() for name, value in rows}


def test_swarm_runs_every_document_once_through_crashes_stalls_and_retries(
    daemon: DaemonThread, tmp_path: Path
) -> None:
    # Short leases so lapses come quickly; nothing below depends on how long anything took.
    args = ["--docs", "12", "--agents", "3", "--lease", "1", "--seed", "3", "--timeout", "200"]
    run = subprocess.run(
        [sys.executable, str(SWARM), "--addr", daemon.address, "--workdir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "invariants hold" in run.stdout
    seen = figures(run.stdout)
    assert seen["documents"] == "12" and seen["side effects (ledger lines)"] == "12"
    assert int(seen["workers crashed mid-document"]) >= 1
    assert seen["workers restarted"] == seen["workers crashed mid-document"]
    assert int(seen["stale holders refused"]) >= 1
    assert int(seen["claims lost and taken over"]) >= 2  # every crash and stall
    assert seen["retries absorbed"] == seen["retries sent by the orchestrator"] != "0"
    assert seen["final report"].startswith('committed: {"digest"')

    # The ledger, read here independently: one side effect per document, no more.
    ledger = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert Counter(e["doc"] for e in ledger) == Counter(f"doc-{i:03d}" for i in range(12))


def test_swarm_checks_catch_a_duplicate_effect_and_two_holders_at_once(tmp_path: Path) -> None:
    swarm = load_swarm()
    args: Any = swarm.parse_args(["--docs", "2", "--agents", "2", "--workdir", str(tmp_path)])
    plan = swarm.Plan.make(args, tmp_path)
    for line in (
        {"event": "work", "doc": "doc-000", "agent": "w0", "token": 5, "t": 1.0},
        {"event": "work", "doc": "doc-000", "agent": "w1", "token": 9, "t": 2.0},  # w0 at work
        {"event": "published", "doc": "doc-000", "agent": "w0", "token": 5, "t": 3.0},
        {"event": "published", "doc": "doc-000", "agent": "w1", "token": 9, "t": 4.0},
    ):
        swarm.append(plan.activity, line)
    for agent, token in (("w0", 5), ("w1", 9)):
        swarm.append(plan.ledger, {"doc": "doc-000", "agent": agent, "token": token})
    _, problems = swarm.check(plan)
    assert "doc-000: side effect ran 2 times (expected exactly once)" in problems
    assert "doc-001: side effect ran 0 times (expected exactly once)" in problems
    assert "doc-000: w1 (token 9) started while w0 (token 5) was still at work" in problems
