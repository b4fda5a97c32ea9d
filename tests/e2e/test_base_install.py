"""``pip install coordd`` with no extra: the client works against a daemon, and nothing that
stores or indexes data is installed (those are the ``[server]`` extra's)."""

from __future__ import annotations

import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_readme import DEFAULT_ADDRESS, python_blocks

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("psycopg", "psycopg_pool", "pgserver", "hnswlib", "numpy")


def _run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=check, timeout=300
    )


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The interpreter of a fresh venv holding ``pip install <repo>`` and nothing else."""
    root = tmp_path_factory.mktemp("base-install")
    # No pip inside the venv (ensurepip is the slow part of venv creation): this interpreter's
    # pip installs into it with --python. The wheel is built once, without build isolation.
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--quiet")
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", root / "dist", REPO)
    (wheel,) = (root / "dist").glob("coordd-*.whl")
    _run(*pip, "--python", python, "install", wheel)
    yield python


def test_base_install_has_no_server_dependencies(base_python: Path) -> None:
    probe = "import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m)])"
    found = _run(base_python, "-c", probe, *SERVER_ONLY).stdout.split()
    assert found == []
    imports = "import coordd_client, coordd.v1, coordd.errors, coordd_sidecar.cli"
    assert _run(base_python, "-c", imports).returncode == 0


def test_base_install_runs_the_readme_example(base_python: Path, daemon) -> None:
    first = python_blocks()[0].replace(DEFAULT_ADDRESS, daemon.address)
    out = _run(base_python, "-c", first).stdout
    assert "still mine: True" in out, out


def test_serve_without_the_server_extra_names_it(base_python: Path) -> None:
    for command in ("serve", "migrate"):
        done = _run(base_python.parent / "coordd", command, check=False)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "pip install 'coordd[server]'" in lines[0]
        assert "psycopg" in lines[0]


def test_shell_commands_work_in_the_base_install(base_python: Path, daemon, client) -> None:
    client.claims.acquire("acme/base", "doc-1", ttl=60)
    coordd = base_python.parent / "coordd"
    health = _run(coordd, "health", "--addr", daemon.address)
    assert "is healthy" in health.stdout, health.stdout
    listed = _run(coordd, "claims", "list", "acme/base", "--json", "--addr", daemon.address)
    assert '"resource": "doc-1"' in listed.stdout, listed.stdout
