"""The Containerfiles (images cannot be built here): hadolint accepts them, and what the
manifests rely on is checked against them and against the repository."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.k8s.kube import K8S, ROOT

HADOLINT = Path(sys.executable).parent / "hadolint"
IMAGES = {"daemon": ROOT / "Containerfile", "sidecar": ROOT / "Containerfile.sidecar"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_hadolint_accepts_both() -> None:
    out = subprocess.run(
        [str(HADOLINT), *map(str, IMAGES.values())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_non_root_and_buildable_from_the_repository(image: str) -> None:
    steps = instructions(IMAGES[image])
    assert [a for w, a in steps if w == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    runtime = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    # The runtime stage takes only the built virtualenv from the build stage.
    assert [a for w, a in runtime if w == "COPY"] == ["--from=build /opt/coordd /opt/coordd"]
    (user,) = [a for w, a in runtime if w == "USER"]
    assert user == "10001:10001"
    # Every source the build stage copies exists, and together they hold every wheel package.
    build = steps[: steps.index(runtime[0])]
    sources = [a.split()[0] for w, a in build if w == "COPY"]
    sources += [s for w, a in build if w == "COPY" for s in a.split()[1:-1]]
    for source in sources:
        assert (ROOT / source).exists(), source
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert package.split("/")[0] in sources, package


def test_the_sidecar_image_has_no_server_extra_and_the_daemon_image_has() -> None:
    def installs(image: str) -> str:
        (line,) = [a for w, a in instructions(IMAGES[image]) if w == "RUN" and "pip install" in a]
        return line

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = extras["optional-dependencies"]
    assert '".[server,otlp]"' in installs("daemon")
    assert '".[otlp]"' in installs("sidecar") and "server" not in installs("sidecar")
    assert {"server", "otlp"} <= set(extras)
    entry = {w: a for w, a in instructions(IMAGES["sidecar"])}["ENTRYPOINT"]
    assert entry == '["coordd-sidecar"]'


def test_the_manifests_run_as_the_images_user() -> None:
    for path in (K8S / "base/deployment.yaml", K8S / "injector/deployment.yaml"):
        pod = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 10001, path
