"""``python -m bench <scenario> [options]``: run one side-by-side benchmark.

Each scenario module in this package has ``main(argv) -> int`` and ends its output with one
``RESULT <scenario> name=value ...`` line.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def scenarios() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench <scenario> [options]\n\nscenarios: " + ", ".join(scenarios()))
        return 0 if argv else 2
    name = argv[0]
    if name not in scenarios():
        print(f"unknown scenario {name!r}; choose from: {', '.join(scenarios())}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
