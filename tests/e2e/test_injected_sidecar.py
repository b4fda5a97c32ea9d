"""The container the injector writes works: run ``coordd-sidecar`` with exactly its args and env
(paths moved under tmp, the downward API filled in as the kubelet would), wait on its startup
probe, and let an agent with the agent container's env call a token-mode TLS daemon through it.
This pins the contract between the injector and the sidecar, which are built apart."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coordd.inject import InjectConfig, plan_injection
from coordd.inject.patch import CREDENTIALS_DIR, SOCKET_DIR, apply_patch
from coordd_client import AsyncClient
from tests.fix_daemon import write_policy
from tests.k8s.certs import self_signed


def _kubelet_env(container: dict[str, Any], moved: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: downward API values, $(VAR)
    references to earlier variables expanded, paths moved."""
    fields = {"metadata.name": "researcher-7d9f8-abcde", "metadata.namespace": "agents"}
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            value = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), entry["value"]
            )
        env[entry["name"]] = _move(value, moved)
    return env


def _move(value: str, moved: dict[str, str]) -> str:
    for old, new in moved.items():
        value = value.replace(old, new)
    return value


async def test_an_injected_agent_reaches_a_token_mode_daemon_through_its_sidecar(
    start_daemon, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path, "localhost", "127.0.0.1")
    token = "researcher-token-value"
    policy = write_policy(
        tmp_path,
        f'[[agents]]\nid = "researcher"\nrole = "researcher"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        '[[grants]]\nrole = "researcher"\nnamespaces = ["research/**"]\n'
        'operations = ["read", "write", "claim"]\n',
    )
    daemon = start_daemon(auth="token", policy_file=policy, tls_cert_file=cert, tls_key_file=key)
    config = InjectConfig(upstream=f"localhost:{daemon.daemon.port}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "researcher",
            "annotations": {"coordd.io/inject": "true", "coordd.io/token-secret": "rt"},
        },
        "spec": {"serviceAccountName": "researcher", "containers": [{"name": "agent"}]},
    }
    injected = apply_patch(pod, plan_injection(pod, config).patch)
    (sidecar,) = injected["spec"]["initContainers"]
    (agent,) = injected["spec"]["containers"]
    # The volumes, as the kubelet would lay them out: the Secret's keys as files.
    socket_dir, credentials = tmp_path / "socket", tmp_path / "credentials"
    socket_dir.mkdir()
    credentials.mkdir()
    (credentials / "token").write_text(token)
    (credentials / "ca.crt").write_bytes(cert.read_bytes())
    moved = {SOCKET_DIR: str(socket_dir), CREDENTIALS_DIR: str(credentials)}
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("COORDD_", "OTEL_"))}
    environ.update(_kubelet_env(sidecar, moved))
    # The image's ENTRYPOINT is coordd-sidecar (Containerfile.sidecar).
    command = [str(Path(sys.executable).parent / "coordd-sidecar")]
    command += [_move(arg, moved) for arg in sidecar["args"]]
    process = subprocess.Popen(command, env=environ, stderr=subprocess.PIPE, text=True)
    try:
        probe = [_move(arg, moved) for arg in sidecar["startupProbe"]["exec"]["command"]]
        deadline = time.monotonic() + 30
        while subprocess.run(probe, check=False).returncode != 0:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the sidecar's startup probe never passed"
            time.sleep(0.1)
        agent_env = _kubelet_env(agent, moved)
        socket_path = Path(agent_env["COORDD_ADDR"])
        # The agent's image runs as another user: the socket must let it connect.
        assert stat.S_IMODE(socket_path.stat().st_mode) & 0o006 == 0o006
        async with await AsyncClient.connect(
            agent_env["COORDD_ADDR"], agent_id=agent_env["COORDD_AGENT_ID"]
        ) as client:
            entry = await client.memory.put("research/run-1", "finding", {"ok": True})
            # Identity came from the token the sidecar holds, which the agent never saw.
            assert entry.provenance.agent_id == "researcher"
            assert entry.provenance.role == "researcher"
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
