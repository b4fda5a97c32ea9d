"""docs/kubernetes.md stays true: its agent manifest injects into valid objects, and its
annotation table names every annotation the injector understands."""

from __future__ import annotations

import re

import yaml

from coordd.inject import annotations as ann
from coordd.inject.offline import inject_text
from tests.k8s.kube import NEWEST, OLDEST, ROOT, validate
from tests.k8s.test_injection import CONFIG

DOC = (ROOT / "docs" / "kubernetes.md").read_text()


def test_the_agent_manifest_of_the_walkthrough_injects_into_valid_objects() -> None:
    (manifest,) = re.findall(r"```yaml\n(# researcher\.yaml\n.*?)```", DOC, flags=re.S)
    text, reports = inject_text(manifest, CONFIG)
    assert [(r.object, r.outcome) for r in reports] == [("deployment/researcher", "injected")]
    (deployment,) = yaml.safe_load_all(text)
    validate(deployment, OLDEST)
    validate(deployment, NEWEST)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["name"] == "coordd-sidecar"
    assert pod["volumes"][1]["secret"]["secretName"] == "researcher-token"


def test_the_annotation_table_is_complete() -> None:
    documented = set(re.findall(r"^\| `(coordd\.io/[a-z-]+)` \|", DOC, flags=re.M))
    assert documented == ann.KNOWN - {ann.STATUS}
