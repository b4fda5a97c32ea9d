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
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

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


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver standing in for k8s/observability's collector."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict[str, str], Any]]:
        """(resource attributes, span) for every span received."""
        out = []
        with self._lock:
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    attrs = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope in resource_spans.scope_spans:
                        out += [(attrs, span) for span in scope.spans]
        return out


def _start(command: list[str], env: dict[str, str], ready: re.Pattern[str]) -> tuple[Any, str]:
    """Start a process; return it and the first match of *ready* in its stderr or stdout."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # ends if the process exits
        seen.append(line)
        if match := ready.search(line):
            # Keep draining its output so it never blocks on a full pipe.
            process.drain = threading.Thread(target=process.stdout.read, daemon=True)
            process.drain.start()
            return process, match.group(1)
    process.wait(timeout=30)
    process.stdout.close()
    raise AssertionError(f"{command[:3]} did not start: {''.join(seen)}")


def _stop(process: Any) -> None:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    process.drain.join(timeout=30)
    process.stdout.close()
    assert code == 0


def test_one_agent_call_is_one_trace_at_the_collector(pg_dsn: str, tmp_path: Path) -> None:
    """docs/kubernetes.md step 5 with real processes: the agent, its injected sidecar and the
    daemon export OTLP (the injector's and the ConfigMap's OTEL_* variables) to a collector,
    which receives one trace: agent -> sidecar -> daemon -> SQL."""
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # What components/tracing gives the daemon's ConfigMap and the injector's environment.
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COORDD_", "OTEL_"))}
    daemon, address = _start(
        [sys.executable, "-m", "coordd", "serve", "--listen", "127.0.0.1:0", "--dsn", pg_dsn],
        {**clean, **otel, "OTEL_SERVICE_NAME": "coordd"},
        re.compile(r"coordd serving on (\S+)"),
    )
    processes = [daemon]
    try:
        pod = {
            "metadata": {"name": "researcher", "annotations": {"coordd.io/inject": "true"}},
            "spec": {"serviceAccountName": "researcher", "containers": [{"name": "agent"}]},
        }
        config = InjectConfig(upstream=address, otel=tuple(sorted(otel.items())))
        injected = apply_patch(pod, plan_injection(pod, config).patch)
        (sidecar,) = injected["spec"]["initContainers"]
        (agent,) = injected["spec"]["containers"]
        (tmp_path / "socket").mkdir()
        moved = {SOCKET_DIR: str(tmp_path / "socket")}
        command = [str(Path(sys.executable).parent / "coordd-sidecar"), *sidecar["args"]]
        sidecar_process, _ = _start(
            [_move(a, moved) for a in command],
            {**clean, **_kubelet_env(sidecar, moved)},
            re.compile(r"(coordd-sidecar listening on)"),
        )
        processes.append(sidecar_process)
        # The agent: docs/kubernetes.md's example, run as written in its container's environment.
        doc = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md").read_text()
        (agent_code,) = re.findall(r"```python\n(# researcher/__main__\.py\n.*?)```", doc, re.S)
        out = subprocess.run(
            [sys.executable, "-c", agent_code],
            env={**clean, **_kubelet_env(agent, moved)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        trace_id = out.stdout.split("trace id: ")[1].strip()
        assert len(trace_id) == 32
    finally:
        for process in reversed(processes):  # the sidecar stops before the daemon, as in a pod
            _stop(process)  # exporters flush at exit
        server.stop(grace=None)
    in_trace = [(r, s) for r, s in collector.spans() if s.trace_id.hex() == trace_id]
    by_service: dict[str, list[Any]] = {}
    for resource, span in in_trace:
        by_service.setdefault(resource["service.name"], []).append((resource, span))
    assert {"researcher", "coordd-sidecar", "coordd"} <= set(by_service)
    method = "/coordd.v1.MemoryService/PutMemory"
    client_kind, server_kind = 3, 2  # OTLP Span.SpanKind CLIENT, SERVER

    def one(service: str, name: str, kind: int | None = None) -> Any:
        found = [
            s
            for _, s in by_service[service]
            if s.name.startswith(name) and (kind is None or s.kind == kind)
        ]
        assert len(found) >= 1, (service, name, [s.name for _, s in by_service[service]])
        return found[0]

    agent_span = one("researcher", method, client_kind)
    sidecar_in = one("coordd-sidecar", method, server_kind)
    sidecar_out = one("coordd-sidecar", method, client_kind)
    daemon_span = one("coordd", method, server_kind)
    sql_span = one("coordd", "sql ")
    assert sidecar_in.parent_span_id == agent_span.span_id
    assert daemon_span.parent_span_id == sidecar_out.span_id
    assert sql_span.parent_span_id == daemon_span.span_id
    # The sidecar's resource names its agent and pod, as the injector set it.
    sidecar_resource = by_service["coordd-sidecar"][0][0]
    assert sidecar_resource["coordd.agent.id"] == "researcher"
    assert sidecar_resource["k8s.pod.name"] == "researcher-7d9f8-abcde"
