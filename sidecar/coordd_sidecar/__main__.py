"""``python -m coordd_sidecar`` runs the sidecar."""

import sys

from .cli import main

sys.exit(main())
