"""CoorddSaver against a real daemon: LangGraph's conformance suite, and fencing per thread."""

from __future__ import annotations

import json
import operator
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.graph import END, START, StateGraph

from coordd_client import AsyncClient, Client
from coordd_client.langgraph import CoorddSaver, ThreadHeldError
from tests.fix_daemon import DaemonThread
from tests.fix_db import DbClock

ROOT = Path(__file__).resolve().parents[2]


async def test_langgraph_checkpoint_conformance(connect, capsys) -> None:
    client: AsyncClient = await connect("conformance")

    @checkpointer_test(name="CoorddSaver")
    async def coordd_saver():  # type: ignore[no-untyped-def]
        # A fresh root per capability suite: the suites reuse thread ids ("thread-0", ...).
        async with CoorddSaver(client, root=f"conformance/{uuid.uuid4().hex[:8]}") as saver:
            yield saver

    report = await validate(coordd_saver, progress=ProgressCallbacks.quiet())
    counts = {
        name: (r.tests_passed, r.tests_failed, sorted(r.failures))
        for name, r in report.results.items()
        if r.detected
    }
    with capsys.disabled():
        print(f"\nlanggraph-checkpoint-conformance (passed, failed) per capability: {counts}")
    assert report.passed_all_base() and report.passed_all(), counts
    # prune is left out on purpose: a naive keep_latest breaks LangGraph's DeltaChannel.
    assert set(counts) == {
        "put",
        "put_writes",
        "get_tuple",
        "list",
        "delete_thread",
        "delete_for_runs",
        "copy_thread",
    }
    assert sum(p for p, _, _ in counts.values()) >= 70


def _step(saver: CoorddSaver, thread_id: str, parent: dict | None, step: int) -> dict:
    config = generate_config(thread_id)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return saver.put(
        config,
        generate_checkpoint(channel_values={"n": step}, channel_versions={"n": step + 1}),
        generate_metadata(step=step),
        {"n": step + 1},
    )


def _chain(saver: CoorddSaver, thread_id: str) -> list[tuple[str, str | None]]:
    """(checkpoint_id, parent_id), newest first."""
    return [
        (
            t.config["configurable"]["checkpoint_id"],
            t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None,
        )
        for t in saver.list(generate_config(thread_id))
    ]


def _assert_linear(chain: list[tuple[str, str | None]]) -> None:
    ids = [c for c, _ in chain]
    parents = [p for _, p in chain]
    assert parents[-1] is None, "the oldest checkpoint is the root"
    assert parents[:-1] == ids[1:], f"each checkpoint's parent is the one before it: {chain}"


def test_second_writer_is_refused_with_the_holder(daemon: DaemonThread) -> None:
    with (
        Client.connect(daemon.address, agent_id="graph-a") as a,
        Client.connect(daemon.address, agent_id="graph-b") as b,
    ):
        sa, sb = CoorddSaver(a), CoorddSaver(b)
        tip = _step(sa, "t1", None, 0)
        with pytest.raises(ThreadHeldError) as err:
            _step(sb, "t1", tip, 1)
        assert err.value.holder is not None and err.value.holder.holder_agent_id == "graph-a"
        assert "held by graph-a" in str(err.value) and "did not fork" in str(err.value)
        assert sb.get_tuple(generate_config("t1")) is not None, "reads need no claim"
        tip = _step(sa, "t1", tip, 1)
        sa.close()  # releases the claim: b may now take the thread over
        _step(sb, "t1", tip, 2)
        _assert_linear(_chain(sb, "t1"))
        sb.close()


def test_lost_claim_turns_the_next_write_into_a_refusal(
    daemon: DaemonThread, db_clock: DbClock
) -> None:
    with (
        Client.connect(daemon.address, agent_id="graph-a") as a,
        Client.connect(daemon.address, agent_id="graph-b") as b,
    ):
        sa, sb = CoorddSaver(a, lease=30), CoorddSaver(b, lease=30)
        tip_a = _step(sa, "t2", None, 0)
        tip_a = _step(sa, "t2", tip_a, 1)
        db_clock.advance(31)  # a is paused past its lease (by the database clock)
        latest = sb.get_tuple(generate_config("t2"))
        assert latest is not None
        tip_b = _step(sb, "t2", latest.config, 2)  # b takes over and resumes from the head
        with pytest.raises(ThreadHeldError) as err:
            _step(sa, "t2", tip_a, 2)  # a wakes up and writes from its stale head
        assert err.value.holder is not None and err.value.holder.holder_agent_id == "graph-b"
        assert not sa.holds("t2")
        chain = _chain(sb, "t2")
        _assert_linear(chain)
        assert chain[0][0] == tip_b["configurable"]["checkpoint_id"] and len(chain) == 3
        sa.close()
        sb.close()


def test_same_agent_in_two_savers_is_refused(client: Client) -> None:
    first, second = CoorddSaver(client), CoorddSaver(client)
    _step(first, "t3", None, 0)
    with pytest.raises(ThreadHeldError, match="same agent"):
        _step(second, "t3", None, 0)
    first.close()


_WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from langgraph.checkpoint.conformance.test_utils import (
        generate_checkpoint, generate_config, generate_metadata)
    from coordd_client.langgraph import CoorddSaver, ThreadHeldError

    addr, agent, sync = sys.argv[1], sys.argv[2], sys.argv[3]

    def wait_for(name):
        while not os.path.exists(os.path.join(sync, name)):
            time.sleep(0.01)

    saver = CoorddSaver.from_addr(addr, agent_id=agent, lease=60)
    open(os.path.join(sync, agent + ".ready"), "w").close()
    wait_for("go")  # both processes are connected: race for the thread
    outcome = {"agent": agent, "written": []}
    try:
        for step in range(10):
            head = saver.get_tuple(generate_config("shared"))
            config = head.config if head else generate_config("shared")
            config = {"configurable": dict(config["configurable"])}
            cp = generate_checkpoint(channel_values={"by": agent, "step": step})
            saver.put(config, cp, generate_metadata(step=step, writer=agent), {})
            outcome["written"].append(cp["id"])
    except ThreadHeldError as exc:
        outcome["refused"] = str(exc)
        outcome["holder"] = exc.holder.holder_agent_id if exc.holder else None
    with open(os.path.join(sync, agent + ".json"), "w") as f:
        json.dump(outcome, f)
    wait_for("finish")  # keep the claim until both have tried
    saver.close()
    """
)


def _wait_for(paths: list[Path], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"waiting for {paths}"
        time.sleep(0.02)


def test_two_processes_one_thread_one_wins_chain_intact(
    daemon: DaemonThread, client: Client, tmp_path: Path
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'clients'}", "PATH": "/usr/bin:/bin"}
    agents = ("proc-a", "proc-b")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), daemon.address, agent, str(tmp_path)], env=env, cwd=ROOT
        )
        for agent in agents
    ]
    try:
        _wait_for([tmp_path / f"{a}.ready" for a in agents])
        (tmp_path / "go").touch()
        _wait_for([tmp_path / f"{a}.json" for a in agents])
    finally:
        (tmp_path / "finish").touch()
        for p in procs:
            assert p.wait(timeout=60) == 0
    outcomes = [json.loads((tmp_path / f"{a}.json").read_text()) for a in agents]
    winners = [o for o in outcomes if "refused" not in o]
    losers = [o for o in outcomes if "refused" in o]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    winner, loser = winners[0], losers[0]
    assert loser["written"] == [] and loser["holder"] == winner["agent"]
    assert "did not fork" in loser["refused"]

    saver = CoorddSaver(client)
    chain = _chain(saver, "shared")
    _assert_linear(chain)
    assert [c for c, _ in chain] == list(reversed(winner["written"]))
    writers = {t.metadata.get("writer") for t in saver.list(generate_config("shared"))}
    assert writers == {winner["agent"]}


class NotesState(TypedDict):
    notes: Annotated[list[str], operator.add]


def test_a_langgraph_graph_resumes_its_thread(client: Client) -> None:
    def note(state: NotesState) -> dict[str, list[str]]:
        return {"notes": [f"note {len(state['notes']) + 1}"]}

    builder = StateGraph(NotesState)
    builder.add_node("note", note)
    builder.add_edge(START, "note")
    builder.add_edge("note", END)
    with CoorddSaver(client) as saver:
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "conversation-1"}}
        graph.invoke({"notes": []}, config)
        out = graph.invoke({"notes": []}, config)
        assert out["notes"] == ["note 1", "note 2"]
        assert saver.holds("conversation-1")
        history = list(graph.get_state_history(config))
        assert len(history) >= 4 and history[0].values["notes"] == ["note 1", "note 2"]
    assert not saver.holds("conversation-1")
