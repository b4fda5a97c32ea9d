"""A real PostgreSQL for the test session: COORDD_TEST_DSN if set, else a private pgserver.

Never skips: without COORDD_TEST_DSN the fixture starts one. Each test starts from empty coordd
tables and a database clock at offset zero.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from coordd.storage.embedded import EmbeddedPostgres
from coordd.storage.migrate import migrate

# Tables that hold configuration rather than data survive between tests.
KEEP = ("schema_migrations", "clock")


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a migrated PostgreSQL for this session."""
    dsn = os.environ.get("COORDD_TEST_DSN")
    embedded = None
    tmp = None
    if not dsn:
        # pgserver narrates every command at INFO; its failures come at ERROR with the log.
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        tmp = tempfile.TemporaryDirectory(prefix="coordd-test-pg-")
        embedded = EmbeddedPostgres(Path(tmp.name) / "pgdata")
        dsn = embedded.start()
    import asyncio

    asyncio.run(migrate(dsn))
    try:
        yield dsn
    finally:
        if embedded is not None:
            embedded.stop()
        if tmp is not None:
            tmp.cleanup()


class DbClock:
    """The database clock coordd reads (``coordd.now()``), advanced by tests instead of sleeping."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def advance(self, by: timedelta | float) -> None:
        seconds = by.total_seconds() if isinstance(by, timedelta) else float(by)
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE coordd.clock SET offset_interval = offset_interval + %s",
                (timedelta(seconds=seconds),),
            )

    def reset(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            conn.execute("UPDATE coordd.clock SET offset_interval = '0'")


def is_unit_test(request: pytest.FixtureRequest) -> bool:
    """tests/unit does no I/O: it gets no database (and running it alone starts none)."""
    return "unit" in request.node.path.relative_to(request.config.rootpath).parts


@pytest.fixture(autouse=True)
def clean_db(request: pytest.FixtureRequest) -> Iterator[None]:
    if is_unit_test(request):
        yield
        return
    pg_dsn: str = request.getfixturevalue("pg_dsn")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'coordd'"
            " AND NOT tablename = ANY(%s)",
            (list(KEEP),),
        ).fetchall()
        truncate = "TRUNCATE " + ", ".join(f"coordd.{r[0]}" for r in rows) + " CASCADE"
        # The session daemon's background reads (index catch-up, watch registrations) lock
        # some of these tables while TRUNCATE locks them one by one: PostgreSQL may pick the
        # TRUNCATE as a deadlock's victim. The reads are short; try again.
        for attempt in range(5):
            try:
                conn.execute(truncate)
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
        conn.execute("UPDATE coordd.clock SET offset_interval = '0'")
    yield


@pytest.fixture
def db_clock(pg_dsn: str) -> DbClock:
    return DbClock(pg_dsn)


@pytest.fixture
async def pg_conn(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    """A direct connection for assertions on stored state."""
    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def empty_dsn(pg_dsn: str) -> Iterator[str]:
    """A fresh database of its own with nothing in it (no coordd schema), dropped after."""
    import uuid

    from psycopg.conninfo import make_conninfo

    name = f"scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(pg_dsn, dbname=name)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def scratch_dsn(empty_dsn: str) -> str:
    """A fresh, migrated database of its own, for tests that break or block it."""
    import asyncio

    asyncio.run(migrate(empty_dsn))
    return empty_dsn


def migrate_to(dsn: str, version: int) -> str:
    """Apply migrations 1..*version* only to the empty database *dsn* (as an older coordd left
    it, for upgrade tests); returns *dsn*."""
    from coordd.storage.migrate import available

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA coordd")
        conn.execute(
            "CREATE TABLE coordd.schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for mig in available():
            if mig.version <= version:
                conn.execute(mig.sql.encode())
                conn.execute(
                    "INSERT INTO coordd.schema_migrations (version, name) VALUES (%s, %s)",
                    (mig.version, mig.name),
                )
    return dsn
