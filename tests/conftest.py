"""Fixtures are plugins, one module per concern (psycopg's layout)."""

import sys

# fix_ast first: it guards ast.parse before anything else can race on it.
pytest_plugins = (
    "tests.fix_ast",
    "tests.fix_logs",
    "tests.fix_db",
    "tests.fix_daemon",
    "tests.fix_sidecar",
    # pytester: coordd_client.testing is tested as a user's own suite would load it.
    "pytester",
)


# The daemon lowers Python's GIL switch interval (coordd/cli.py); tests run daemons in-process,
# so do the same here to keep thread handoffs as fast as in production.
sys.setswitchinterval(0.001)
