"""Render kustomizations with the kubectl of the dev dependencies; validate objects strictly.

Built-in kinds are checked by kubernetes-validate's strict schemas (unknown fields refused).
Custom resources are checked against their CRD's own schema, vendored in ``schemas/`` and made
strict the same way (``additionalProperties: false`` wherever the CRD lists properties and does
not preserve unknown fields), as ``kubectl apply --validate=strict`` would against a cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBECTL = Path(sys.executable).parent / "kubectl"
OLDEST = "1.29.0"
NEWEST = kubernetes_validate.utils.latest_version()
CRD_SCHEMAS = Path(__file__).parent / "schemas"

# kubernetes-validate reads and parses its 1.8 MB definitions file again on every call (about
# 70 ms each, several seconds per test on a busy machine); the files never change in a run.
kubernetes_validate.utils.schema_contents = cache(kubernetes_validate.utils.schema_contents)


def render(kustomization: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` a directory; return its objects."""
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    for path in CRD_SCHEMAS.glob("*.json"):
        doc = json.loads(path.read_text())
        if (doc["apiVersion"], doc["kind"]) == (api_version, kind):
            return jsonschema.Draft202012Validator(_strict(doc["schema"]))
    return None


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate(obj: dict[str, Any], version: str) -> None:
    """Raise if *obj* is not a valid object of Kubernetes *version* (strict)."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.utils.SchemaNotFoundError:
        validator = _crd_validator(obj["apiVersion"], obj["kind"])
        if validator is None:
            raise
        validator.validate(obj)
