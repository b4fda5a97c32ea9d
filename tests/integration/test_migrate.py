"""The schema: table migrations once each, SQL functions (re)applied at every migrate."""

from __future__ import annotations

import psycopg

from coordd.storage.migrate import available, functions, migrate

FUNCTION_NAMES = """
    SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'coordd' ORDER BY 1
"""


async def test_migrate_again_applies_no_migration_and_restores_edited_functions(
    scratch_dsn: str,
) -> None:
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        before = conn.execute(FUNCTION_NAMES).fetchall()
        # An out-of-band edit of a function (or an older version of it) is replaced on migrate.
        conn.execute(
            "CREATE OR REPLACE FUNCTION coordd.ns_revision(p_ns text) RETURNS bigint"
            " LANGUAGE sql STABLE AS $$ SELECT 42::bigint $$"
        )
        assert conn.execute("SELECT coordd.ns_revision('x')").fetchone() == (42,)

    assert await migrate(scratch_dsn) == []

    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT coordd.ns_revision('x')").fetchone() == (0,)
        assert conn.execute(FUNCTION_NAMES).fetchall() == before
        recorded = conn.execute("SELECT version FROM coordd.schema_migrations ORDER BY 1")
        assert [v for (v,) in recorded.fetchall()] == [m.version for m in available()]


def test_functions_live_in_files_and_migrations_hold_none() -> None:
    assert [name for name, _ in functions()] == sorted(name for name, _ in functions())
    for name, sql in functions():
        assert "CREATE FUNCTION" not in sql, f"{name}: use CREATE OR REPLACE FUNCTION"
    for mig in available():
        assert "FUNCTION coordd." not in mig.sql.replace("DROP FUNCTION", ""), mig.name
