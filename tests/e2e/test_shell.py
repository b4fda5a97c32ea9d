"""The shell CLI against a real daemon: a few commands as a user runs them (a subprocess: exit
codes, one-line errors, JSON that parses, watch following and ending), the rest in-process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordd.cli import main
from coordd_client import Client, Participant, TransitionWrite
from tests.fix_daemon import DaemonThread, write_policy

NS = "acme/shell"


def coordd(*args: str, addr: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``coordd ARGS`` as a user would, in a shell."""
    env = {**os.environ, "COORDD_ADDR": addr}
    return subprocess.run(
        [sys.executable, "-m", "coordd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``coordd ARGS`` in this process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_claims_as_a_script_sees_them(daemon: DaemonThread, client: Client) -> None:
    client.claims.acquire(NS, "doc-1", ttl=60, progress="page 3")
    client.claims.acquire(NS, "doc-2", ttl=60)

    listed = coordd("claims", "list", NS, "--json", addr=daemon.address)
    assert listed.returncode == 0, listed.stderr
    claims = json.loads(listed.stdout)
    assert [(c["resource"], c["holder_agent_id"]) for c in claims] == [
        ("doc-1", "agent-s"),
        ("doc-2", "agent-s"),
    ]
    assert claims[0]["progress"] == "page 3" and claims[0]["fencing_token"] > 0

    table = coordd("claims", "get", NS, "doc-1", addr=daemon.address)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["RESOURCE", "HOLDER", "ROLE", "TOKEN"]
    assert row.split()[:3] == ["doc-1", "agent-s", "worker"]

    missing = coordd("claims", "get", NS, "doc-9", addr=daemon.address)
    assert missing.returncode == 3
    assert one_error_line(missing.stderr) == f"coordd: NOT_FOUND: no live claim on 'doc-9' in {NS}"

    bad = coordd("claims", "list", "acme//shell", addr=daemon.address)
    assert bad.returncode == 2 and bad.stdout == ""
    assert one_error_line(bad.stderr).startswith("coordd: INVALID_ARGUMENT: namespace: ")


def test_parsers_are_built_without_importing_the_client() -> None:
    """`coordd --help` and `coordd serve` do not pay for the client or gRPC."""
    probe = (
        "import sys, coordd.cli; coordd.cli.parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'coordd_client'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_daemon_down_and_usage_errors_are_one_line() -> None:
    addr = f"127.0.0.1:{free_port()}"
    down = coordd("health", "--connect-timeout", "0.5", addr=addr)
    assert down.returncode == 4
    assert one_error_line(down.stderr) == (
        f"coordd: UNAVAILABLE: could not reach coordd at {addr} within 0.5s "
        "(is `coordd serve` running? see --addr / COORDD_ADDR)"
    )
    usage = coordd("claims", "list", addr=addr)
    assert usage.returncode == 2 and "the following arguments are required: NS" in usage.stderr


def test_watch_follows_and_ends_on_ctrl_c_and_when_the_daemon_goes_away(
    start_daemon: Any,
) -> None:
    d: DaemonThread = start_daemon()
    c = Client.connect(d.address, agent_id="w", role="worker")
    first = c.memory.put(NS, "a", 1).revision
    env = {**os.environ, "COORDD_ADDR": d.address}
    follow = [sys.executable, "-m", "coordd", "watch", NS, "--from", str(first)]
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with (
        subprocess.Popen(follow, env=env, **pipes) as ctrl_c,
        subprocess.Popen([*follow, "--json"], env=env, **pipes) as gone,
    ):
        try:
            assert ctrl_c.stdout and ctrl_c.stderr and gone.stdout and gone.stderr
            # The backlog from --from, then a live change: one line per event, in order.
            assert ctrl_c.stdout.readline().split()[:5] == [str(first), NS, "memory", "put", "a"]
            assert json.loads(gone.stdout.readline())["key"] == "a"
            c.claims.acquire(NS, "doc-1", ttl=60)
            line = ctrl_c.stdout.readline().split()
            assert line[:6] == [str(first + 1), NS, "claim", "acquire", "doc-1", "w"]
            assert json.loads(gone.stdout.readline())["op"] == "acquire"

            ctrl_c.send_signal(signal.SIGINT)
            assert ctrl_c.wait(timeout=30) == 0
            assert ctrl_c.stderr.read() == ""

            c.close()
            d.stop()
            assert gone.wait(timeout=60) == 4
            error = one_error_line(gone.stderr.read())
            assert error.startswith("coordd: UNAVAILABLE: the daemon went away")
            assert error.endswith(f"resume with --from {first + 2}")
        finally:
            ctrl_c.kill()
            gone.kill()


def test_memory_context_agreements_in_process(
    daemon: DaemonThread, capsys: pytest.CaptureFixture[str]
) -> None:
    addr = ("--addr", daemon.address)
    with Client.connect(daemon.address, agent_id="writer-1", role="writer") as c:
        c.memory.put(NS, "ceo", {"name": "Dana"}, embedding=[0.1, 0.9, 0.2], tags=["people"])
        c.memory.put(NS, "ceo", {"name": "Dana", "since": 2025}, embedding=[0.1, 0.9, 0.2])
        c.memory.put(NS, "cfo", {"name": "Lee"}, embedding=[0.9, 0.1, 0.1])
        c.context.post(NS, {"doc": 42}, to_role="reviewer", context_type="review_request")
        c.agreements.propose(
            NS,
            "report",
            participants=["writer-1", Participant(role="reviewer")],
            deadline=60,
            transition={"ship": True},
            writes=[TransitionWrite(namespace=NS, key="report", value="final")],
        )

    code, out, _ = run(capsys, "memory", "get", NS, "ceo", "--json", *addr)
    entry = json.loads(out)
    assert code == 0 and entry["value"] == {"name": "Dana", "since": 2025}
    assert entry["provenance"]["agent_id"] == "writer-1"
    code, out, _ = run(capsys, "memory", "get", NS, "ceo", *addr)
    assert "written by:" in out and "writer-1 (writer)" in out
    assert run(capsys, "memory", "get", NS, "nobody", *addr)[0] == 3

    code, out, _ = run(capsys, "memory", "list", "acme", "--json", *addr)
    assert sorted(e["key"] for e in json.loads(out)) == ["ceo", "cfo"]
    code, out, _ = run(capsys, "memory", "history", NS, "ceo", "--json", *addr)
    versions = [v["value"] for v in json.loads(out)]
    assert versions == [{"name": "Dana", "since": 2025}, {"name": "Dana"}]
    code, out, _ = run(
        capsys, "memory", "search", "acme", "--embedding", "0.1,0.8,0.3", "-k", "1", *addr
    )
    assert code == 0 and out.splitlines()[1].split()[2] == "ceo", out
    code, _, err = run(capsys, "memory", "search", "acme", "--embedding", "[oops]", *addr)
    assert code == 2 and err.startswith("coordd: --embedding: expected a JSON array")

    as_reviewer = ("--agent-id", "reviewer-1", "--role", "reviewer", *addr)
    code, out, _ = run(capsys, "context", "inbox", NS, "--json", *as_reviewer)
    [entry] = json.loads(out)
    assert (entry["from_agent_id"], entry["content"]) == ("writer-1", {"doc": 42})
    code, out, _ = run(capsys, "context", "sent", NS, "--agent-id", "writer-1", *addr)
    assert "review_request" in out and "role reviewer" in out

    code, out, _ = run(capsys, "agreements", "get", NS, "report", "--json", *addr)
    agreement = json.loads(out)
    assert (agreement["state"], agreement["accepted"], agreement["seats"]) == ("pending", 1, 2)
    code, out, _ = run(capsys, "agreements", "get", NS, "report", *addr)
    assert "accepted:     1 of 2" in out and "writer-1   writer   accept" in out
    code, _, err = run(capsys, "agreements", "get", NS, "nope", *addr)
    assert code == 3 and err.startswith("coordd: NOT_FOUND")

    code, out, _ = run(capsys, "health", "--json", *addr)
    health = json.loads(out)
    assert code == 0 and health["healthy"] is True
    assert health["services"]["coordd.v1.ClaimService"] == "SERVING"


def test_tokens_grants_and_admin_release(
    start_daemon: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = {"worker-1": "w-secret", "ops-1": "o-secret"}
    agents = "".join(
        f'[[agents]]\nid = "{agent}"\nrole = "{agent[:-2]}"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for agent, token in tokens.items()
    )
    grants = (
        '[[grants]]\nrole = "worker"\nnamespaces = ["acme/work/**"]\n'
        'operations = ["read", "claim"]\n'
        '[[grants]]\nrole = "ops"\nnamespaces = ["acme/**"]\noperations = ["read", "admin"]\n'
    )
    d: DaemonThread = start_daemon(
        auth="token", policy_file=write_policy(tmp_path, agents + grants)
    )
    for agent, token in tokens.items():
        (tmp_path / agent).write_text(token + "\n")
    as_worker = ("--addr", d.address, "--token-file", str(tmp_path / "worker-1"))
    as_ops = ("--addr", d.address, "--token-file", str(tmp_path / "ops-1"))
    with Client.connect(d.address, agent_id="worker-1", token=tokens["worker-1"]) as c:
        token = c.claims.acquire("acme/work/x", "job-1", ttl=60).revision

    assert run(capsys, "claims", "list", "acme/work/x", *as_worker)[0] == 0
    code, _, err = run(capsys, "claims", "list", "acme/secret", *as_worker)
    assert code == 5
    assert one_error_line(err).startswith("coordd: PERMISSION_DENIED SCOPE_NOT_GRANTED: ")
    assert "acme/secret" in err
    code, _, err = run(capsys, "claims", "release", "acme/work/x", "job-1", *as_worker)
    assert code == 5 and "admin" in err

    code, out, _ = run(
        capsys, "claims", "release", "acme/work/x", "job-1", "--reason", "stuck", *as_ops
    )
    assert code == 0
    assert out.strip() == (
        f"released 'job-1' in acme/work/x: it was held by worker-1 (token {token}, now stale)"
    )
    assert run(capsys, "claims", "get", "acme/work/x", "job-1", *as_ops)[0] == 3
    assert run(capsys, "claims", "release", "acme/work/x", "job-1", *as_ops)[0] == 3

    code, _, err = run(capsys, "claims", "list", "acme/work/x", "--addr", d.address)
    assert code == 5 and one_error_line(err).startswith("coordd: UNAUTHENTICATED: ")
    missing = str(tmp_path / "nope")
    code, _, err = run(capsys, "claims", "list", "acme/work/x", "--token-file", missing)
    assert code == 2 and one_error_line(err).startswith("coordd: --token-file: ")
