"""Sidecar injection: AdmissionReview v1 in, JSON patch out, applied with jsonpatch to real pod
specs and schema-validated; ``coordd inject`` gives exactly what the webhook gives."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import jsonpatch
import pytest
import yaml

from coordd.inject import InjectConfig
from coordd.inject.offline import InjectError, inject_text
from coordd.inject.patch import SIDECAR_NAME, SOCKET_PATH
from coordd.inject.webhook import BadReviewError, review
from tests.k8s.kube import NEWEST, OLDEST, validate

CONFIG = InjectConfig(
    sidecar_image="registry.example/coordd-sidecar:0.1.0",
    upstream="coordd.coordd.svc.cluster.local:7420",
    otel=(
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.observability:4317"),
        ("OTEL_TRACES_EXPORTER", "otlp"),
    ),
)


def make_pod(
    *,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    service_account: str | None = "researcher",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": containers or [{"name": "agent", "image": "python:3.11-slim"}],
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "researcher-",
            "namespace": "agents",
            "labels": {"app": "researcher"},
            "annotations": {"coordd.io/inject": "true"} if annotations is None else annotations,
        },
        "spec": spec,
    }


def admission_review(pod: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    """What the API server sends (admission.k8s.io/v1)."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "agents",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def webhook(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Call the webhook; return (its response, the pod with its patch applied by jsonpatch)."""
    request = admission_review(pod)
    answer = review(json.dumps(request).encode(), CONFIG)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == request["request"]["uid"]
    if "patch" not in response:
        return response, pod
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    return response, jsonpatch.apply_patch(pod, patch)


def offline(pod: dict[str, Any]) -> dict[str, Any]:
    text, _ = inject_text(yaml.safe_dump(pod), CONFIG)
    return yaml.safe_load(text)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def assert_valid(pod: dict[str, Any]) -> None:
    validate(pod, OLDEST)
    validate(pod, NEWEST)


def test_single_container_gets_a_native_sidecar() -> None:
    pod = make_pod(annotations={"coordd.io/inject": "true", "coordd.io/token-secret": "r-token"})
    response, patched = webhook(pod)
    assert response["allowed"] is True
    assert_valid(patched)
    spec = patched["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == SIDECAR_NAME and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == CONFIG.sidecar_image
    env = env_of(sidecar)
    assert env["COORDD_UPSTREAM"] == CONFIG.upstream
    assert env["COORDD_LISTEN"] == "unix://" + SOCKET_PATH
    assert env["COORDD_TOKEN_FILE"] == "/var/run/secrets/coordd/token"
    assert sidecar["args"] == [
        "--agent-id", "researcher", "--role", "agent", "--tls-ca", "/var/run/secrets/coordd/ca.crt"
    ]  # fmt: skip
    # OTEL_* passed on; the sidecar names itself and its agent.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["OTEL_SERVICE_NAME"] == SIDECAR_NAME
    assert "coordd.agent.id=researcher" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["coordd-credentials"]["secret"]["secretName"] == "r-token"
    assert volumes["coordd-socket"]["emptyDir"]["medium"] == "Memory"
    # The token is the sidecar's alone; the agent gets the socket, read-only.
    (agent,) = spec["containers"]
    assert agent["volumeMounts"] == [
        {"name": "coordd-socket", "mountPath": "/var/run/coordd", "readOnly": True}
    ]
    agent_env = env_of(agent)
    assert agent_env["COORDD_ADDR"] == SOCKET_PATH
    assert agent_env["COORDD_AGENT_ID"] == "researcher"
    assert agent_env["OTEL_SERVICE_NAME"] == "researcher"
    assert agent_env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert patched["metadata"]["labels"]["coordd.io/sidecar"] == "injected"
    assert patched["metadata"]["annotations"]["coordd.io/status"] == "injected"
    assert offline(pod) == patched


def test_annotations_set_agent_id_role_and_resources() -> None:
    pod = make_pod(
        annotations={
            "coordd.io/inject": "true",
            "coordd.io/agent-id": "planner-7",
            "coordd.io/role": "planner",
            "coordd.io/sidecar-cpu": "250m",
            "coordd.io/sidecar-memory": "256Mi",
        },
        service_account=None,
    )
    _, patched = webhook(pod)
    assert_valid(patched)
    (sidecar,) = patched["spec"]["initContainers"]
    assert sidecar["args"] == ["--agent-id", "planner-7", "--role", "planner"]
    assert "COORDD_TOKEN_FILE" not in env_of(sidecar)
    assert sidecar["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["coordd-socket"]
    # No service account and no annotation: the agent id is "default", the pod's account.
    _, default = webhook(make_pod(service_account=None))
    assert default["spec"]["initContainers"][0]["args"][:2] == ["--agent-id", "default"]


def test_several_containers_each_get_the_address_but_keep_their_own() -> None:
    pod = make_pod(
        containers=[
            {
                "name": "agent",
                "image": "agent:1",
                "env": [{"name": "MODEL", "value": "small"}],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            },
            {
                "name": "tool",
                "image": "tool:1",
                "env": [
                    {"name": "COORDD_ADDR", "value": "10.0.0.9:7420"},
                    {"name": "OTEL_TRACES_EXPORTER", "value": "none"},
                ],
            },
        ]
    )
    pod["spec"]["volumes"] = [{"name": "work", "emptyDir": {}}]
    response, patched = webhook(pod)
    assert_valid(patched)
    agent, tool = patched["spec"]["containers"]
    assert env_of(agent)["MODEL"] == "small" and env_of(agent)["COORDD_ADDR"] == SOCKET_PATH
    assert [m["name"] for m in agent["volumeMounts"]] == ["work", "coordd-socket"]
    # The pod's own COORDD_ADDR (and its own OTEL choice) win; the author is told.
    assert env_of(tool)["COORDD_ADDR"] == "10.0.0.9:7420"
    assert env_of(tool)["OTEL_TRACES_EXPORTER"] == "none"
    assert [e["name"] for e in tool["env"]].count("COORDD_ADDR") == 1
    assert response["warnings"] == [
        "container 'tool' sets COORDD_ADDR itself; coordd kept it",
        "container 'tool' sets OTEL_TRACES_EXPORTER itself; coordd kept it",
    ]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["work", "coordd-socket"]
    assert offline(pod) == patched


def test_existing_init_containers_run_after_the_sidecar() -> None:
    setup = {"name": "fetch-model", "image": "busybox:1", "command": ["true"]}
    pod = make_pod(init_containers=[setup])
    _, patched = webhook(pod)
    assert_valid(patched)
    names = [c["name"] for c in patched["spec"]["initContainers"]]
    assert names == [SIDECAR_NAME, "fetch-model"]
    # Init containers are not agents: they get no COORDD_ADDR.
    assert "env" not in patched["spec"]["initContainers"][1]
    assert offline(pod) == patched


def test_an_injected_pod_is_left_as_it_is() -> None:
    _, injected = webhook(make_pod())
    response, again = webhook(copy.deepcopy(injected))
    assert response == {"uid": response["uid"], "allowed": True}
    assert again == injected
    assert offline(injected) == injected


@pytest.mark.parametrize("annotations", [{}, {"coordd.io/inject": "false"}, {"other": "x"}])
def test_pods_not_opted_in_are_untouched(annotations: dict[str, str]) -> None:
    pod = make_pod(annotations=annotations)
    response, patched = webhook(pod)
    assert response["allowed"] is True and "patch" not in response and patched == pod
    assert offline(pod) == pod


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("coordd.io/inject", "yes", 'use "true" or "false"'),
        ("coordd.io/sidecar-cpu", "lots", "not a CPU quantity"),
        ("coordd.io/sidecar-cpu", "0m", "above zero"),
        ("coordd.io/sidecar-memory", "128MB", "not a memory quantity"),
        ("coordd.io/token-secret", "Researcher_Token", "not a Secret name"),
        ("coordd.io/agent-id", "has space", "1-128 characters"),
        ("coordd.io/sidecar-mem", "128Mi", "unknown; did you mean coordd.io/sidecar-memory?"),
    ],
)
def test_a_bad_annotation_is_refused_with_a_message_naming_it(key, value, expected) -> None:
    annotations = {"coordd.io/inject": "true", key: value}
    response, _ = webhook(make_pod(annotations=annotations))
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 422
    message = response["status"]["message"]
    assert f"annotation {key}:" in message and expected in message
    assert repr(value) in message or "unknown" in message
    with pytest.raises(InjectError, match=f"pod/<unnamed>: annotation {key}:"):
        offline(make_pod(annotations=annotations))


def test_only_pod_creation_is_mutated() -> None:
    request = admission_review(make_pod(), operation="UPDATE")
    response = review(json.dumps(request).encode(), CONFIG)["response"]
    assert response == {"uid": request["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "not JSON"),
        (b'{"kind": "Pod"}', "not an AdmissionReview"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}',
            "use admission.k8s.io/v1",
        ),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "no request.uid"),
    ],
)
def test_a_malformed_review_is_refused(body: bytes, problem: str) -> None:
    with pytest.raises(BadReviewError, match=problem):
        review(body, CONFIG)


WORKLOADS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: researcher}
spec:
  selector: {matchLabels: {app: researcher}}
  template:
    metadata:
      labels: {app: researcher}
      annotations: {coordd.io/inject: "true", coordd.io/token-secret: researcher-token}
    spec:
      serviceAccountName: researcher
      containers: [{name: agent, image: "agent:1"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: memory-keeper}
spec:
  serviceName: memory-keeper
  selector: {matchLabels: {app: keeper}}
  template:
    metadata:
      labels: {app: keeper}
      annotations: {coordd.io/inject: "true", coordd.io/agent-id: keeper}
    spec:
      initContainers: [{name: warm, image: "busybox:1"}]
      containers: [{name: agent, image: "agent:1"}, {name: tool, image: "tool:1"}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: one-shot}
spec:
  template:
    metadata:
      annotations: {coordd.io/inject: "true"}
    spec:
      restartPolicy: Never
      containers: [{name: agent, image: "agent:1"}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {coordd.io/inject: "true"}
        spec:
          restartPolicy: OnFailure
          containers: [{name: agent, image: "agent:1"}]
---
apiVersion: v1
kind: Service
metadata: {name: researcher}
spec:
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers: [{name: web, image: "web:1"}]
"""

TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def _template(obj: dict[str, Any]) -> dict[str, Any]:
    node = obj
    for key in TEMPLATE_PATHS[obj["kind"]]:
        node = node[key]
    return node


def config_environment() -> dict[str, str]:
    """The variables that give a ``coordd`` process the same InjectConfig as CONFIG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COORDD_"))}
    env["COORDD_SIDECAR_IMAGE"] = CONFIG.sidecar_image
    env["COORDD_UPSTREAM"] = CONFIG.upstream
    env.update(CONFIG.otel)
    return env


def test_coordd_inject_gives_each_workload_what_the_webhook_gives_its_pods() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coordd", "inject", "-f", "-"],
        input=WORKLOADS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=config_environment(),
    )
    assert out.returncode == 0, out.stderr
    before = [d for d in yaml.safe_load_all(WORKLOADS) if d]
    after = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in after] == [
        (d["kind"], d["metadata"]["name"]) for d in before
    ]
    assert out.stderr.splitlines() == [
        "deployment/researcher injected",
        "statefulset/memory-keeper injected",
        "job/one-shot injected",
        "cronjob/nightly injected",
        "service/researcher not a workload",
        "deployment/plain not opted in",
    ]
    for original, injected in zip(before, after, strict=True):
        validate(injected, OLDEST)
        validate(injected, NEWEST)
        if original["kind"] not in TEMPLATE_PATHS:
            assert injected == original
            continue
        # The pod the workload's controller would create, through the webhook:
        template = _template(original)
        pod = {"apiVersion": "v1", "kind": "Pod", **copy.deepcopy(template)}
        _, patched = webhook(pod)
        assert {"apiVersion": "v1", "kind": "Pod", **_template(injected)} == patched
        # ...and everything outside the template is as it was.
        _template(original).clear()
        _template(injected).clear()
        assert injected == original


def test_coordd_inject_refuses_and_writes_nothing_on_a_bad_annotation(tmp_path) -> None:
    manifest = tmp_path / "agent.yaml"
    manifest.write_text(
        WORKLOADS.replace("coordd.io/agent-id: keeper", "coordd.io/agent-id: 'a b'")
    )
    out = subprocess.run(
        [sys.executable, "-m", "coordd", "inject", "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(
        "coordd inject: statefulset/memory-keeper: annotation coordd.io/agent-id: 'a b'"
    )


def test_lists_are_injected_item_by_item() -> None:
    pod = make_pod()
    text, reports = inject_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [pod]}), CONFIG
    )
    (item,) = yaml.safe_load(text)["items"]
    assert item == webhook(pod)[1]
    assert [r.outcome for r in reports] == ["injected"]
