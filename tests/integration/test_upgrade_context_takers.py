"""Upgrade to schema 13 on a database with held entries: what each agent holds is counted in
context_takers, takes become heap-only updates, and takers get back what they held."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from coordd.storage.migrate import migrate
from tests.fix_db import migrate_to

NS = "up/takers"
TAKE = "SELECT id FROM coordd.read_context(%s, %s, 'worker', true, '', '', 0, %s, '60 s', false)"


@pytest.fixture
def schema12_dsn(empty_dsn: str) -> str:
    """A database at schema 12 (migrations 1-12 only, as the previous coordd left it)."""
    return migrate_to(empty_dsn, 12)


def test_upgrade_counts_what_each_taker_holds(schema12_dsn: str) -> None:
    with psycopg.connect(schema12_dsn, autocommit=True) as conn:
        # Schema 12's shapes: 1 open; 2 and 3 held by w1 (live lease); 4 held by w2 (lapsed
        # lease); 5 acknowledged by w2.
        conn.execute(
            "INSERT INTO coordd.context_entries (namespace, id, from_agent_id, from_role,"
            " to_role, context_type, content, delivery, create_time, expire_time)"
            " SELECT %s, i, 'p', 'planner', 'worker', 'job', to_jsonb(i), 'any', now(),"
            " now() + interval '1 hour' FROM generate_series(1, 5) i",
            (NS,),
        )
        conn.execute(
            "INSERT INTO coordd.context_any (namespace, id, to_role, to_agent_id, expire_time,"
            " taker_agent_id, take_expire_time, acked, ack_time)"
            " SELECT %s, i, 'worker', '', now() + interval '1 hour',"
            " (ARRAY['', 'w1', 'w1', 'w2', 'w2'])[i],"
            " CASE WHEN i IN (2, 3) THEN now() + interval '1 hour'"
            "      WHEN i = 4 THEN now() - interval '1 minute' END,"
            " i = 5, CASE WHEN i = 5 THEN now() END"
            " FROM generate_series(1, 5) i",
            (NS,),
        )
        conn.execute("INSERT INTO coordd.namespaces (name, revision) VALUES (%s, 5)", (NS,))

    assert asyncio.run(migrate(schema12_dsn)) == ["0013_context_takers.sql"]

    with psycopg.connect(schema12_dsn, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT agent_id, held, lease_until > now() FROM coordd.context_takers"
            " WHERE namespace = %s ORDER BY agent_id",
            (NS,),
        ).fetchall()
        assert counts == [("w1", 2, True), ("w2", 1, False)]
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'context_any'"
        ).fetchall()
        assert ("context_any_held",) not in indexes
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'coordd.context_any'::regclass"
        ).fetchone()
        assert options == (["fillfactor=30"],)

        # w1 gets back what it held, first, then what this take added (the open entry and
        # w2's lapsed one); w2 then finds nothing free.
        assert [i for (i,) in conn.execute(TAKE, (NS, "w1", 10))] == [1, 2, 3, 4]
        assert [i for (i,) in conn.execute(TAKE, (NS, "w2", 10))] == [None]  # an empty page
        ack = "SELECT acked FROM coordd.ack_context(%s, %s, 'worker', %s, NULL, NULL, NULL)"
        assert conn.execute(ack, (NS, "w1", [2, 3])).fetchone() == ([2, 3],)
        assert [i for (i,) in conn.execute(TAKE, (NS, "w1", 10))] == [1, 4]
        assert conn.execute(ack, (NS, "w1", [1, 4])).fetchone() == ([1, 4],)
        held = conn.execute(
            "SELECT held FROM coordd.context_takers WHERE namespace = %s AND agent_id = 'w1'",
            (NS,),
        ).fetchone()
        assert held == (0,)


def test_a_take_writes_no_index_entry(scratch_dsn: str) -> None:
    # The point of schema 13: a take changes no indexed column, so on a page with room its
    # row versions are heap-only (HOT), whatever else the table holds.
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT coordd.post_context(%s, 'p', 'planner', 'worker', '', 'job', to_jsonb(i),"
            " '', '', interval '1 hour', 'any', '{}', NULL, NULL, NULL)"
            " FROM generate_series(1, 200) i",
            (NS,),
        )
        before = conn.execute(
            "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'context_any'"
        ).fetchone()
        with conn.transaction():
            taken = conn.execute(TAKE, (NS, "agent-with-a-long-id-" + "x" * 24, 100)).fetchall()
            hot = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
                " WHERE relname = 'context_any'"
            ).fetchone()
        assert len(taken) == 100 and before is not None
        assert hot == (100, 100)
