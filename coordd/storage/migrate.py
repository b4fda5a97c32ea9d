"""The schema, applied at daemon start under an advisory lock.

Two kinds of SQL: table migrations (``migrations/NNNN_name.sql``, numbered, append-only, each
applied once and recorded) and functions (``sql/*.sql``, applied in name order with
``CREATE OR REPLACE`` at every migrate, so a function is changed by editing its file).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg.conninfo import conninfo_to_dict

from coordd.errors import StorageUnavailableError
from coordd.storage.db import named_row

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x636F6F7264  # "coord": one migrator at a time across replicas
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_FUNCTIONS = re.compile(r"\d{2}_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with coordd, in version order."""
    folder = resources.files("coordd.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        m = _NAME.fullmatch(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text()))
    return sorted(found, key=lambda mig: mig.version)


def functions() -> list[tuple[str, str]]:
    """The SQL function files shipped with coordd, as (name, text) in the order they apply."""
    folder = resources.files("coordd.storage") / "sql"
    found = [(e.name, e.read_text()) for e in folder.iterdir() if _FUNCTIONS.fullmatch(e.name)]
    return sorted(found)


def describe(conninfo: str) -> str:
    """Where a DSN points, without its password (for messages and logs)."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparsable DSN"
    host = parts.get("host") or "local socket"
    where = f"{host}:{parts['port']}" if parts.get("port") else str(host)
    return f"database {parts.get('dbname') or '(default)'} on {where}"


async def connect(conninfo: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """Connect for administration; failures become StorageUnavailableError naming the target."""
    try:
        return await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageUnavailableError(
            f"cannot connect to PostgreSQL ({describe(conninfo)}): {first}"
        ) from exc


async def migrate(conninfo: str) -> list[str]:
    """Apply the migrations not yet applied, then every function file.

    Returns:
        The names of the migrations applied now.
    """
    applied_now: list[str] = []
    conn = await connect(conninfo)
    async with conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute("CREATE SCHEMA IF NOT EXISTS coordd")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS coordd.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = conn.cursor(row_factory=named_row)
        await cur.execute("SELECT version FROM coordd.schema_migrations")
        done = {row.version for row in await cur.fetchall()}
        for mig in available():
            if mig.version in done:
                continue
            logger.info("applying migration %s", mig.name)
            await conn.execute(mig.sql.encode())
            await conn.execute(
                "INSERT INTO coordd.schema_migrations (version, name) VALUES (%s, %s)",
                (mig.version, mig.name),
            )
            applied_now.append(mig.name)
        for _name, sql in functions():
            await conn.execute(sql.encode())
    return applied_now
