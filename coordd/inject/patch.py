"""The one function that decides what injection does to a pod, as an RFC 6902 JSON patch.

The webhook returns the patch to the API server; ``coordd inject`` applies it to pod templates
itself (:func:`apply_patch`). Both call :func:`plan_injection`, so what a pod gets online and
offline cannot drift apart.

What an opted-in pod gets (the pod spec is otherwise left as written):

- the sidecar as a *native sidecar*: the first init container, ``restartPolicy: Always``, so it
  starts before every other container, is ready (its startup probe sees the socket) before the
  agent starts, and stops after the agent, which can still release its claims on the way out;
- an in-memory ``emptyDir`` holding the sidecar's Unix socket, mounted read-only into every agent
  container (connecting to a socket needs no write access to the mount);
- with ``coordd.io/token-secret``: that Secret mounted into the sidecar only (the agent never sees
  the token), read as ``token`` (``COORDD_TOKEN_FILE``) and ``ca.crt`` (the daemon's CA);
  ``--agent-id``/``--role`` always (with a token they only label the sidecar's telemetry; without
  one they are the identity, which only a dev-mode daemon accepts);
- ``COORDD_ADDR`` (the socket path) and ``COORDD_AGENT_ID`` in every container of
  ``spec.containers``, and the injector's ``OTEL_*`` variables, plus ``OTEL_SERVICE_NAME`` set
  to the agent id. A variable a
  container already sets in its own ``env`` is kept (its author meant it) and reported as a
  warning; ``envFrom`` cannot be seen at admission, and Kubernetes lets ``env`` win over it, so
  set an override under ``env``;
- the annotation ``coordd.io/status: injected`` and the label ``coordd.io/sidecar: injected``,
  which the daemon's NetworkPolicy admits.

A pod that already has a container named ``coordd-sidecar`` is left exactly as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordd.inject import annotations as ann
from coordd.inject.config import InjectConfig

SIDECAR_NAME = "coordd-sidecar"
SOCKET_VOLUME = "coordd-socket"
SOCKET_DIR = "/var/run/coordd"
SOCKET_PATH = SOCKET_DIR + "/sidecar.sock"
CREDENTIALS_VOLUME = "coordd-credentials"
CREDENTIALS_DIR = "/var/run/secrets/coordd"
SIDECAR_LABEL = "coordd.io/sidecar"
"""Label on injected pods; the daemon's NetworkPolicy lets only such pods in."""

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Injection:
    """What injection does to one pod."""

    patch: list[Json]
    """RFC 6902 operations (only ``add``); empty when the pod is left alone."""
    outcome: str
    """``injected``, ``not opted in`` or ``already injected``."""
    warnings: list[str] = field(default_factory=list)
    """Things the pod's author should know (shown by kubectl as admission warnings)."""


def plan_injection(pod: Mapping[str, Any], config: InjectConfig) -> Injection:
    """Decide what injecting the sidecar into *pod* takes.

    Args:
        pod: a Pod, or a pod template (anything with ``metadata`` and ``spec``).
        config: the injector's settings.

    Returns:
        The patch (paths relative to *pod*), the outcome and any warnings.

    Raises:
        AnnotationError: the pod opts in with an annotation that cannot work.
    """
    metadata = pod.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    if not ann.wants_injection(annotations):
        return Injection([], "not opted in")
    spec = pod.get("spec") or {}
    containers: Sequence[Json] = spec.get("containers") or []
    init_containers: Sequence[Json] = spec.get("initContainers") or []
    if any(c.get("name") == SIDECAR_NAME for c in (*init_containers, *containers)):
        return Injection([], "already injected")
    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    options = ann.pod_options(
        annotations,
        service_account,
        default_cpu=config.default_cpu,
        default_memory=config.default_memory,
    )
    ops: list[Json] = []
    sidecar = sidecar_container(options, config)
    if init_containers:
        ops.append(_add("/spec/initContainers/0", sidecar))
    else:
        ops.append(_add("/spec/initContainers", [sidecar]))
    volumes = [{"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
    if options.token_secret:
        volumes.append(
            {
                "name": CREDENTIALS_VOLUME,
                "secret": {"secretName": options.token_secret, "defaultMode": 0o444},
            }
        )
    ops += _append_all("/spec/volumes", spec.get("volumes"), volumes)
    warnings: list[str] = []
    agent_env = [
        ("COORDD_ADDR", SOCKET_PATH),
        ("COORDD_AGENT_ID", options.agent_id),
        *_otel_for_agent(config, options),
    ]
    for index, container in enumerate(containers):
        path = f"/spec/containers/{index}"
        mount = {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR, "readOnly": True}
        ops += _append_all(path + "/volumeMounts", container.get("volumeMounts"), [mount])
        own = {e.get("name") for e in container.get("env") or []}
        for name in sorted(own & {name for name, _ in agent_env}):
            warnings.append(
                f"container {container.get('name')!r} sets {name} itself; coordd kept it"
            )
        added = [{"name": n, "value": v} for n, v in agent_env if n not in own]
        ops += _append_all(path + "/env", container.get("env"), added)
    ops.append(_add("/metadata/annotations/" + _escape(ann.STATUS), "injected"))
    if metadata.get("labels"):
        ops.append(_add("/metadata/labels/" + _escape(SIDECAR_LABEL), "injected"))
    else:
        ops.append(_add("/metadata/labels", {SIDECAR_LABEL: "injected"}))
    return Injection(ops, "injected", warnings)


def sidecar_container(options: ann.PodOptions, config: InjectConfig) -> Json:
    """The sidecar's container spec for one pod (a native sidecar: an init container)."""
    # With a token the daemon takes identity from the token; the id and role then label the
    # sidecar's metrics and traces. Without one they are the (dev-mode) identity itself.
    args = ["--agent-id", options.agent_id, "--role", options.role]
    env: list[Json] = [
        {"name": "COORDD_UPSTREAM", "value": config.upstream},
        {"name": "COORDD_LISTEN", "value": "unix://" + SOCKET_PATH},
    ]
    mounts: list[Json] = [{"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR}]
    if options.token_secret:
        env.append({"name": "COORDD_TOKEN_FILE", "value": CREDENTIALS_DIR + "/token"})
        args += ["--tls-ca", CREDENTIALS_DIR + "/ca.crt"]
        mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True})
    env += [
        {"name": "COORDD_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "COORDD_POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
    ]
    otel = dict(config.otel)
    resource = [
        f"coordd.agent.id={options.agent_id}",
        "k8s.pod.name=$(COORDD_POD_NAME)",
        "k8s.namespace.name=$(COORDD_POD_NAMESPACE)",
    ]
    if otel.get("OTEL_RESOURCE_ATTRIBUTES"):
        resource.insert(0, otel["OTEL_RESOURCE_ATTRIBUTES"])
    otel["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(resource)
    otel["OTEL_SERVICE_NAME"] = SIDECAR_NAME
    env += [{"name": k, "value": v} for k, v in sorted(otel.items())]
    container: Json = {
        "name": SIDECAR_NAME,
        "image": config.sidecar_image,
        "restartPolicy": "Always",
        "args": args,
        "env": env,
        "resources": {
            "requests": {"cpu": options.cpu, "memory": options.memory},
            "limits": {"memory": options.memory},
        },
        # The agent starts only once this passes: the socket exists, so its first call connects.
        "startupProbe": {
            "exec": {"command": ["test", "-S", SOCKET_PATH]},
            "periodSeconds": 1,
            "failureThreshold": 60,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    return container


def apply_patch(document: Mapping[str, Any], patch: Sequence[Mapping[str, Any]]) -> Json:
    """Apply the ``add`` operations that :func:`plan_injection` makes; return a new document.

    This is RFC 6902 ``add`` (object member, array index or ``-`` for the end), which is all the
    injector emits; anything else is refused rather than half applied.
    """
    result: Json = copy.deepcopy(dict(document))
    for op in patch:
        if op.get("op") != "add":
            raise ValueError(f"only 'add' operations are supported, not {op.get('op')!r}")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        parent: Any = result
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last, value = tokens[-1], copy.deepcopy(op["value"])
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value
    return result


def _otel_for_agent(config: InjectConfig, options: ann.PodOptions) -> list[tuple[str, str]]:
    if not config.otel:
        return []
    otel = dict(config.otel)
    otel["OTEL_SERVICE_NAME"] = options.agent_id
    return sorted(otel.items())


def _add(path: str, value: Any) -> Json:
    return {"op": "add", "path": path, "value": value}


def _append_all(path: str, existing: Sequence[Any] | None, items: Sequence[Any]) -> list[Json]:
    """Ops that append *items* to the list at *path*, creating it if it is absent."""
    if not items:
        return []
    if not existing:
        return [_add(path, list(items))]
    return [_add(path + "/-", item) for item in items]


def _escape(key: str) -> str:
    """A map key as one JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
