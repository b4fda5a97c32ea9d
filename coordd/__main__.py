"""``python -m coordd``: the same as the ``coordd`` command."""

from coordd.cli import main

raise SystemExit(main())
