"""Generate coordd/v1 from proto/coordd/v1 (the only way those files are made).

Run: python scripts/gen_protos.py        (writes coordd/v1/)
     python scripts/gen_protos.py --check (exit 1 if the committed files differ)

The proto directory equals the Python package (proto/coordd/v1 <-> coordd.v1), so generated
imports are correct as emitted and need no rewriting.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("coordd") / "v1"
INIT = '"""Generated protobuf and gRPC code for coordd.v1 (scripts/gen_protos.py)."""\n'


def generate(out: Path) -> None:
    """Run protoc (python, grpc and mypy stubs) into *out*."""
    include = str(resources.files("grpc_tools") / "_proto")
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto")
    )
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    # protoc finds the mypy plugins on PATH: look beside this interpreter first, so that
    # `.venv/bin/python scripts/gen_protos.py` works without activating the virtualenv.
    scripts = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / PACKAGE_DIR / "__init__.py").write_text(INIT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = out / PACKAGE_DIR
        target = ROOT / PACKAGE_DIR
        if ns.check:
            cmp = filecmp.dircmp(fresh, target)
            stale = cmp.left_only + cmp.right_only + cmp.diff_files
            stale = [n for n in stale if n != "__pycache__"]
            if stale:
                print("generated code is stale: " + ", ".join(sorted(stale)), file=sys.stderr)
                print("run: python scripts/gen_protos.py", file=sys.stderr)
                return 1
            return 0
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(fresh, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
