"""Token mode end to end: SIGHUP reloads the policy without dropping connections, revoked tokens
are refused from then on, a broken policy file keeps the old one; grant placeholders; a token
cannot act as another agent."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordd_client import AsyncClient, PermissionDeniedError, UnauthenticatedError
from tests.fix_daemon import serve_process, write_policy

SERVING = re.compile(r"coordd serving on (\S+)")


def _agents(tokens: dict[str, tuple[str, str]]) -> str:
    return "".join(
        f'[[agents]]\nid = "{agent}"\nrole = "{role}"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for agent, (role, token) in tokens.items()
    )


GRANTS = (
    '[[grants]]\nrole = "worker"\nnamespaces = ["shared/**", "agents/{agent}/**"]\n'
    'operations = ["read", "write", "claim"]\n'
    '[[grants]]\nrole = "worker"\nnamespaces = ["teams/{role}/**"]\noperations = ["read"]\n'
)
BOTH = {"alice": ("worker", "tok-alice"), "bob": ("worker", "tok-bob")}


class Served:
    def __init__(self, proc: subprocess.Popen[str], address: str, log: list[str]) -> None:
        self.proc, self.address, self.log = proc, address, log

    def wait_for_log(self, pattern: str, within: float = 30) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in list(self.log):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "".join(self.log))


@pytest.fixture
def served(pg_dsn: str, tmp_path: Path) -> Iterator[Served]:
    """``coordd serve`` as its own process in token mode, as an operator runs it."""
    policy = write_policy(tmp_path, _agents(BOTH) + GRANTS)
    proc = serve_process(
        *("--dsn", pg_dsn, "--listen", "127.0.0.1:0"),
        *("--auth", "token", "--policy", str(policy), "--audit-log", str(tmp_path / "audit")),
        env={"COORDD_SWEEP_INTERVAL": "3600"},
    )
    assert proc.stderr is not None
    log: list[str] = []
    address = None
    for line in proc.stderr:
        log.append(line)
        if (m := SERVING.search(line)) is not None:
            address = m.group(1)
            break
    assert address is not None, "".join(log)
    drain = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        yield Served(proc, address, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, "".join(log)
        drain.join(10)
        proc.stderr.close()


async def test_sighup_reloads_the_policy_and_keeps_connections(
    served: Served, tmp_path: Path
) -> None:
    alice = await AsyncClient.connect(served.address, agent_id="alice", token="tok-alice")
    bob = await AsyncClient.connect(served.address, agent_id="bob", token="tok-bob")
    try:
        first = await bob.memory.put("shared/x", "k", {"v": 0})
        watched: list[str] = []

        async def watch() -> None:
            async for event in alice.watch("shared/x", start_revision=first.revision + 1):
                watched.append(event.key)
                if len(watched) == 2:
                    return

        watcher = asyncio.create_task(watch())
        await alice.memory.put("shared/x", "before", {"v": 1})
        # Revoke bob: the file loses his token.
        write_policy(tmp_path, _agents({"alice": BOTH["alice"]}) + GRANTS)
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for_log(r"policy reloaded from .*: 2 grants, 1 agents")
        with pytest.raises(UnauthenticatedError, match="unknown bearer token"):
            await bob.memory.get("shared/x", "k")
        await alice.memory.put("shared/x", "after", {"v": 2})
        await asyncio.wait_for(watcher, 30)  # the stream opened before the reload still runs
        assert watched == ["before", "after"]
        # A policy that does not parse keeps the one in force, and says so in one line.
        write_policy(tmp_path, "[[grants]\nthis is not toml")
        served.proc.send_signal(signal.SIGHUP)
        line = served.wait_for_log(r"policy reload failed, keeping the policy in force")
        assert line.count("\n") == 1
        assert await alice.memory.get("shared/x", "after") is not None
        with pytest.raises(UnauthenticatedError):
            await bob.memory.get("shared/x", "k")
        assert served.proc.poll() is None
    finally:
        await alice.close()
        await bob.close()
    audit = (tmp_path / "audit").read_text()
    assert '"event":"unauthenticated"' in audit and "tok-bob" not in audit


async def test_placeholders_and_tokens_name_exactly_one_agent(served: Served, pg_conn) -> None:
    alice = await AsyncClient.connect(served.address, agent_id="alice", token="tok-alice")
    try:
        await alice.memory.put("agents/alice/notes", "k", {"v": 1})
        with pytest.raises(PermissionDeniedError):
            await alice.memory.put("agents/bob/notes", "k", {"v": 1})
        assert await alice.memory.list("teams/worker") is not None  # {role}: read only
        with pytest.raises(PermissionDeniedError):
            await alice.memory.put("teams/worker/x", "k", {"v": 1})
        with pytest.raises(PermissionDeniedError):
            await alice.memory.list("teams/reviewer")
    finally:
        await alice.close()
    # alice's token cannot write as bob: naming bob is refused, and provenance is the token's.
    posing = await AsyncClient.connect(served.address, agent_id="bob", token="tok-alice")
    try:
        with pytest.raises(UnauthenticatedError) as err:
            await posing.memory.put("shared/p", "k", {"v": 1})
        assert "belongs to agent 'alice'" in err.value.message and "'bob'" in err.value.message
    finally:
        await posing.close()
    cur = await pg_conn.execute("SELECT namespace, agent_id FROM coordd.memory ORDER BY 1")
    assert await cur.fetchall() == [("agents/alice/notes", "alice")]


async def test_an_agent_cannot_act_as_another_through_its_sidecar(
    start_daemon, tmp_path: Path, pg_conn
) -> None:
    from coordd_sidecar import Sidecar, SidecarConfig

    policy = write_policy(tmp_path, _agents(BOTH) + GRANTS)
    d = start_daemon(auth="token", policy_file=policy)
    (tmp_path / "alice-token").write_text("tok-alice\n")
    sidecars = []
    for agent_id in ("alice", ""):  # named as the token's agent, or (as injected) not at all
        sc = Sidecar(
            SidecarConfig(
                upstream=d.address,
                listen="127.0.0.1:0",
                agent_id=agent_id,
                token_file=tmp_path / "alice-token",
            )
        )
        await sc.start()
        sidecars.append(sc)
    try:
        for n, sc in enumerate(sidecars):
            # The agent names bob and even brings bob's token: the sidecar's credential wins
            # or the call is refused; nothing is ever written as bob.
            posing = await AsyncClient.connect(sc.address, agent_id="bob", token="tok-bob")
            try:
                try:
                    entry = await posing.memory.put("shared/s", f"k{n}", {"v": n})
                except UnauthenticatedError:
                    pass
                else:
                    assert entry.provenance.agent_id == "alice"
                with pytest.raises((PermissionDeniedError, UnauthenticatedError)):
                    await posing.memory.put("agents/bob/notes", "k", {"v": 1})  # bob's space
            finally:
                await posing.close()
    finally:
        for sc in sidecars:
            await sc.stop()
    cur = await pg_conn.execute("SELECT key, agent_id FROM coordd.memory ORDER BY 1")
    assert await cur.fetchall() == [("k1", "alice")]  # the id-less sidecar wrote, as alice
