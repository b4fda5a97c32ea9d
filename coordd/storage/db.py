"""Connection pool lifecycle and the one place psycopg errors become coordd errors."""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from psycopg import AsyncConnection
from psycopg.pq import ExecStatus
from psycopg.rows import RowMaker, no_result

from coordd import telemetry
from coordd.domain.models import Fence
from coordd.errors import (
    CoorddError,
    InvalidArgumentError,
    QuotaExceededError,
    StorageUnavailableError,
)

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer("coordd.storage")


def _span_name(sql: str) -> str:
    """A low-cardinality span name: the coordd function called, or the statement's verb."""
    marker = "coordd."
    at = sql.find(marker)
    if at >= 0:
        end = sql.find("(", at)
        return "sql " + sql[at : end if end > 0 else at + 40]
    return "sql " + sql.split(None, 1)[0].upper()


# Rows are named tuples: stores read columns by name (``row.status``), never by position.
Row = Any


_TUPLES = (ExecStatus.TUPLES_OK, ExecStatus.SINGLE_TUPLE, ExecStatus.TUPLES_CHUNK)


@functools.cache
def _row_class(names: tuple[str, ...]) -> Any:
    # rename=True: a column without a usable name (``?column?``, a repeated one) gets ``_N``.
    return collections.namedtuple("Row", names, rename=True)


@functools.cache
def _row_maker(encoding: str, names: tuple[bytes, ...]) -> RowMaker[Any]:
    make: RowMaker[Any] = _row_class(tuple(n.decode(encoding) for n in names))._make
    return make


def named_row(cursor: Any) -> RowMaker[Any]:
    """psycopg row factory: each row a named tuple of its columns (one class per shape).

    Runs once per statement: it reads the column names off the result, as psycopg's own
    ``namedtuple_row`` does, instead of ``cursor.description`` (a Column object per column:
    10.2 against 1.4 us for a claim's 9 columns, measured in process)."""
    res = cursor.pgresult
    if res is None:
        return no_result
    nfields = res.nfields
    if not nfields and res.status not in _TUPLES:  # no tuples (a zero-column SELECT has them)
        return no_result
    return _row_maker(cursor.connection.info.encoding, tuple(map(res.fname, range(nfields))))


_DB_ATTRS: dict[str, AttributeValue] = {"db.system": "postgresql"}


def from_row(cls: type[T], row: Row, **given: Any) -> T:
    """The value type *cls* (a dataclass) from the same-named columns of *row*, plus *given*.

    *row* may also be a value type (a dataclass): a write's result is what was asked, as
    asked, plus what the database stamped (given).
    """
    shape = (cls, type(row))
    names = _SHARED.get(shape)
    if names is None:  # once per value type and row shape, not per row (search hydrates many)
        columns = {f.name for f in dataclasses.fields(row)} if _is_value(row) else set(row._fields)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        names = _SHARED[shape] = tuple(f.name for f in fields if f.name in columns)
    values = {n: getattr(row, n) for n in names if n not in given}
    return cls(**values, **given)


_SHARED: dict[tuple[type, type], tuple[str, ...]] = {}


def _is_value(row: Any) -> bool:
    return dataclasses.is_dataclass(row) and not isinstance(row, type)


T = TypeVar("T")


def fence_params(fence: Fence | None) -> tuple[str | None, str | None, int | None]:
    """A fence as the (namespace, resource, token) arguments of coordd's SQL write functions."""
    return (fence.namespace, fence.resource, fence.token) if fence else (None, None, None)


def _refusal(exc: Exception) -> CoorddError | None:
    """The coordd error a SQL function raised on purpose (SQLSTATE class CD), or None."""
    state = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None else "") or ""
    if state == "CD001":  # embedding_dim <given> <namespace's>
        _, given, existing = [*text.split(), "", "", ""][:3]
        return InvalidArgumentError.single(
            "embedding",
            f"has {given} dimensions but the entries of this namespace have {existing}: "
            "one namespace holds embeddings of one dimension (use another namespace, or "
            "delete its entries first)",
        )
    if state == "CD002":  # <namespace> <kind>_<measure> <quota> <usage>
        ns, name, quota, usage = [*text.split(), "", "", "", ""][:4]
        return QuotaExceededError(ns, name, int(quota or 0), int(usage or 0))
    return None


def _raise_translated(exc: psycopg.DatabaseError | psycopg_pool.PoolTimeout) -> None:
    """Raise the coordd error for a psycopg failure: a SQL function's refusal, or
    StorageUnavailableError for connectivity; return for anything else (re-raised as is)."""
    if (refused := _refusal(exc)) is not None:
        raise refused from None
    if not isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        return
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return
    logger.warning("storage unavailable: %s", exc)
    raise StorageUnavailableError("storage unavailable; retry shortly") from exc


class _RecentFirstPool(psycopg_pool.AsyncConnectionPool[AsyncConnection[Row]]):
    """A pool that hands out the connection returned last (psycopg's hands out the one
    returned first), as PgBouncer reuses its server connections by default.

    Under light load one backend then serves statement after statement with its caches warm,
    instead of each of the idle connections taking turns: about 13 % less PostgreSQL CPU per
    lone write (bench/RESULTS.md, session 17). Connections beyond ``min_size`` that the load
    no longer needs stay idle, so the pool's ``max_idle`` can close them.
    """

    # psycopg_pool's own hook (3.2): getconn takes ``self._pool.popleft()`` here. Should a
    # later version rename either, this override is simply not called and the pool works as
    # psycopg's does; tests/integration/test_db_pool.py then fails and says so.
    async def _get_ready_connection(self, timeout: float | None) -> AsyncConnection[Row] | None:
        idle = getattr(self, "_pool", None)
        if idle is not None and len(idle) > 1 and hasattr(idle, "rotate"):
            idle.rotate(1)  # the newest (rightmost) to the front, where it is taken
        return await super()._get_ready_connection(timeout)


class Database:
    """An async psycopg pool in autocommit mode: every coordd operation is one statement.

    Open it explicitly with :meth:`open` (never in the constructor) and close it on shutdown.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 16,
        statement_timeout_ms: int = 30_000,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self.pool: psycopg_pool.AsyncConnectionPool[AsyncConnection[Row]] = _RecentFirstPool(
            conninfo,
            open=False,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
            kwargs={
                "autocommit": True,
                # Every statement is a function call reused thousands of times: prepare
                # it on first use instead of after five.
                "prepare_threshold": 0,
                "options": f"-c statement_timeout={statement_timeout_ms}",
                "application_name": "coordd",
                "row_factory": named_row,
            },
            name="coordd",
        )

    async def open(self) -> None:
        """Open the pool and wait until its minimum connections are up."""
        await self.pool.open(wait=True, timeout=self._connect_timeout_s)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Row]]:
        """Borrow a connection; psycopg connectivity failures become StorageUnavailableError."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.DatabaseError, psycopg_pool.PoolTimeout) as exc:
            _raise_translated(exc)
            raise

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """One statement's rows on a borrowed connection, errors as :meth:`connection` has
        them. Every statement of the daemon comes here: plain getconn/putconn instead of
        two context managers (autocommit connections have no transaction to end)."""
        try:
            conn = await self.pool.getconn()
            try:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
            finally:
                await self.pool.putconn(conn)
        except (psycopg.DatabaseError, psycopg_pool.PoolTimeout) as exc:
            _raise_translated(exc)
            raise

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row:
        """Run one statement and return its single row."""
        rows = await self.fetchall(sql, params)
        if not rows:  # pragma: no cover - every coordd function returns a row
            raise RuntimeError(f"no row from {sql.split('(')[0]}")
        return rows[0]

    async def fetch_batch(self, ops: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Row]]:
        """Run statements pipelined in one transaction (one commit); the rows of each."""
        attrs: dict[str, AttributeValue] = {**_DB_ATTRS, "coordd.batch_size": len(ops)}
        with _tracer.start_as_current_span("sql batch", attributes=attrs):
            async with (
                self.connection() as conn,
                conn.transaction(),
                conn.pipeline() as pipeline,
            ):
                cursors = [await conn.execute(sql, params) for sql, params in ops]
                await pipeline.sync()
                return [await cur.fetchall() for cur in cursors]

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        # A span that records nothing still costs about 8 us to start and end.
        if not telemetry.tracing_configured():
            return await self._fetch(sql, params)
        with _tracer.start_as_current_span(_span_name(sql), attributes=_DB_ATTRS):
            return await self._fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async with self.connection() as conn:
            await conn.execute(sql, params)

    async def purge_expired(self, table: str, limit: int) -> int:
        """Delete up to *limit* rows of *table* whose ``expire_time`` has passed; how many."""
        row = await self.fetchone(
            "SELECT coordd.purge_expired(%s::regclass, %s) AS purged", (table, limit)
        )
        return int(row.purged)
