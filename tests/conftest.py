"""Fixtures are plugins, one module per concern (psycopg's layout)."""

pytest_plugins = ("tests.fix_db", "tests.fix_daemon")
