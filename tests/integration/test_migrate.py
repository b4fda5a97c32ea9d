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


def test_helpers_called_on_every_write_are_plpgsql(pg_dsn: str) -> None:
    # PostgreSQL 16 plans a sql function that it cannot inline (a FROM, a subquery, several
    # columns) again in every transaction that calls it from plpgsql: 15-200 us of a lone write
    # (bench/RESULTS.md, session 17). A plpgsql helper is planned once per session.
    hot = (
        "now_for_plpgsql",
        "ns_revision",
        "commit_rev",
        "claim_row",
        "idem_row",
        "memory_retire",
        "jsonb_merge_patch",
        "agreement_json",
        "agreement_row",
        "agreement_seat",
        "agreement_decide",
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT p.proname, l.lanname FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang"
            " WHERE n.nspname = 'coordd' AND p.proname = ANY(%s)",
            (list(hot),),
        ).fetchall()
    assert sorted(rows) == sorted((name, "plpgsql") for name in hot)


def test_plpgsql_reads_the_clock_through_its_own_helper() -> None:
    # `t := coordd.now()` plans the sql clock again in every transaction; inside queries
    # coordd.now() is the right one, so only assignments and conditions are checked here.
    for name, sql in functions():
        for line in sql.splitlines():
            code = line.split("--", 1)[0]
            if ":= coordd.now()" in code or ("IF " in code and "coordd.now()" in code):
                raise AssertionError(f"{name}: use coordd.now_for_plpgsql() in {line.strip()!r}")
