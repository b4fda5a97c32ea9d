"""``coordd inject``: inject the sidecar into manifests on disk, like ``linkerd inject``.

Pods, the pod templates of workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
ReplicationController, CronJob) and ``List`` items are injected with the very patch the webhook
would return (:func:`coordd.inject.patch.plan_injection`); every other object passes through
unchanged. A multi-document stream stays one, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from coordd.inject.annotations import AnnotationError
from coordd.inject.config import InjectConfig
from coordd.inject.patch import Json, apply_patch, plan_injection

_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class InjectError(ValueError):
    """A manifest that cannot be injected; the message names the object and the problem."""


@dataclass(frozen=True, slots=True)
class Report:
    """What happened to one object, as ``coordd inject`` tells it on stderr."""

    object: str
    """``kind/name`` of the object."""
    outcome: str
    """``injected``, ``not opted in``, ``already injected`` or ``not a workload``."""
    warnings: tuple[str, ...] = ()


def inject_text(text: str, config: InjectConfig) -> tuple[str, list[Report]]:
    """Inject every opted-in pod in a YAML (or JSON) stream; return the new stream and reports.

    Raises:
        InjectError: the text is not YAML, or an opted-in pod has a bad annotation (nothing is
            returned then, so a pipeline into ``kubectl apply`` applies nothing half-done).
    """
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InjectError(f"not valid YAML: {exc}") from None
    reports: list[Report] = []
    out = [inject_object(doc, config, reports) for doc in documents]
    return yaml.safe_dump_all(out, sort_keys=False, explicit_start=len(out) > 1), reports


def inject_object(obj: Any, config: InjectConfig, reports: list[Report]) -> Any:
    """Inject one object (recursing into ``List`` items); append what happened to *reports*."""
    if not isinstance(obj, dict):
        raise InjectError(f"expected a Kubernetes object (a mapping), got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in obj):
        return {**obj, "items": [inject_object(i, config, reports) for i in obj["items"] or []]}
    name = f"{str(kind).lower()}/{(obj.get('metadata') or {}).get('name', '<unnamed>')}"
    if kind not in _TEMPLATE_PATHS:
        reports.append(Report(name, "not a workload"))
        return obj
    path = _TEMPLATE_PATHS[kind]
    template = _template(obj, path)
    try:
        injection = plan_injection(template, config)
    except AnnotationError as exc:
        raise InjectError(f"{name}: {exc}") from None
    reports.append(Report(name, injection.outcome, tuple(injection.warnings)))
    if not injection.patch:
        return obj
    return _replace(obj, path, apply_patch(template, injection.patch))


def _template(obj: Json, path: tuple[str, ...]) -> Json:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise InjectError(f"{obj.get('kind')} has no pod template at .{'.'.join(path)}")
    return dict(node)


def _replace(obj: Json, path: tuple[str, ...], value: Json) -> Json:
    """A copy of *obj* with the node at *path* replaced (parents copied, siblings shared)."""
    if not path:
        return value
    return {**obj, path[0]: _replace(obj[path[0]], path[1:], value)}
