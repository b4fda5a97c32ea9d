"""Upgrade to schema 10 on a database with context data: the ANY delivery state moves out of
context_entries (taker, lease, receipt) into context_any, and reads, takes and acks go on."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from coordd.storage.migrate import migrate
from tests.fix_db import migrate_to

NS = "up/queue"
READ = (
    "SELECT id, acks FROM coordd.read_context(%s, %s, 'worker', %s, '', '', 0, 100, '60 s', false)"
)


@pytest.fixture
def schema9_dsn(empty_dsn: str) -> str:
    """A database at schema 9 (migrations 1-9 only, as an older coordd left it)."""
    return migrate_to(empty_dsn, 9)


def test_upgrade_keeps_takes_leases_and_receipts(schema9_dsn: str) -> None:
    with psycopg.connect(schema9_dsn, autocommit=True) as conn:
        # Schema 9's shapes: 1 open, 2 held by w1 (live lease), 3 acknowledged by w2 (receipt
        # on the row), 4 acknowledged by w3 before schema 9 (receipt in context_acks), 5 EACH.
        conn.execute(
            "INSERT INTO coordd.context_entries (namespace, id, from_agent_id, from_role,"
            " to_role, context_type, content, delivery, create_time, expire_time,"
            " taker_agent_id, take_expire_time, acked, ack_time)"
            " SELECT %s, i, 'p', 'planner', 'worker', 'job', to_jsonb(i),"
            " CASE WHEN i = 5 THEN 'each' ELSE 'any' END, now(), now() + interval '1 hour',"
            " (ARRAY['', 'w1', 'w2', 'w3', ''])[i],"
            " CASE WHEN i = 2 THEN now() + interval '1 hour' END, i IN (3, 4),"
            " CASE WHEN i = 3 THEN now() END"
            " FROM generate_series(1, 5) i",
            (NS,),
        )
        conn.execute(
            "INSERT INTO coordd.context_acks (namespace, entry_id, agent_id, role, ack_time)"
            " VALUES (%s, 4, 'w3', 'worker', now())",
            (NS,),
        )
        conn.execute("INSERT INTO coordd.namespaces (name, revision) VALUES (%s, 5)", (NS,))

    assert asyncio.run(migrate(schema9_dsn))[0] == "0010_context_any_state.sql"

    with psycopg.connect(schema9_dsn, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'coordd' AND table_name = 'context_entries'"
        ).fetchall()
        assert not {"taker_agent_id", "take_expire_time", "acked", "ack_time"} & {
            c for (c,) in columns
        }
        state = conn.execute(
            "SELECT id, taker_agent_id, take_expire_time IS NOT NULL, acked, ack_time IS NOT NULL"
            " FROM coordd.context_any WHERE namespace = %s ORDER BY id",
            (NS,),
        ).fetchall()
        assert state == [
            (1, "", False, False, False),
            (2, "w1", True, False, False),
            (3, "w2", False, True, True),
            (4, "w3", False, True, False),
        ]

        # Everything with its receipt, whichever schema wrote it.
        every = {i: json.loads(acks) for i, acks in conn.execute(READ, (NS, "w9", False))}
        assert sorted(every) == [1, 2, 3, 4, 5]
        assert [[a["agent_id"] for a in every[i]] for i in (1, 2, 3, 4)] == [[], [], ["w2"], ["w3"]]

        # w2 takes the open entry, not w1's held one; w1 still holds its own.
        assert [i for i, _ in conn.execute(READ, (NS, "w2", True))] == [1, 5]
        assert [i for i, _ in conn.execute(READ, (NS, "w1", True))] == [2, 5]
        ack = "SELECT acked FROM coordd.ack_context(%s, %s, 'worker', %s, NULL, NULL, NULL)"
        assert conn.execute(ack, (NS, "w2", [1, 2])).fetchone() == ([1],)
        assert conn.execute(ack, (NS, "w1", [2])).fetchone() == ([2],)
        assert conn.execute(ack, (NS, "w1", [2])).fetchone() == ([],)  # once
        every = {i: json.loads(acks) for i, acks in conn.execute(READ, (NS, "w9", False))}
        assert [[a["agent_id"] for a in every[i]] for i in (1, 2)] == [["w2"], ["w1"]]


def test_takes_and_acks_read_their_batch_not_the_namespace(scratch_dsn: str) -> None:
    # A connection plans read_context/ack_context generically on its first calls, here while
    # the queue is small and never analyzed, and keeps those plans as the queue grows: each
    # statement must still read about its batch, not every entry of the namespace.
    take = (
        "SELECT id FROM coordd.read_context(%s, %s, 'worker', true, '', '', 0, %s, '60 s', false)"
    )
    ack = "SELECT acked FROM coordd.ack_context(%s, %s, 'worker', %s, NULL, NULL, NULL)"
    post = (
        "SELECT coordd.post_context(%s, 'p', 'planner', 'worker', '', 'job', to_jsonb(n), '', '',"
        " '1 hour', %s, '{}', NULL, NULL, NULL) FROM generate_series(1, %s) n"
    )
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        for table in ("context_entries", "context_any"):  # no statistics, ever, here
            conn.execute(f"ALTER TABLE coordd.{table} SET (autovacuum_enabled = false)")
        conn.execute(post, (NS, "any", 6))
        for _ in range(6):  # past PL/pgSQL's first five runs of each statement
            [(taken,)] = conn.execute(take, (NS, "w1", 1)).fetchall()
            conn.execute(ack, (NS, "w1", [taken]))
        conn.execute(post, (NS, "any", 3000))
        conn.execute(post, (NS, "each", 10))
        with conn.transaction():
            taken_ids = [i for (i,) in conn.execute(take, (NS, "w2", 20)).fetchall()]
            assert conn.execute(ack, (NS, "w2", taken_ids)).fetchone() == (taken_ids,)
            read = conn.execute(
                "SELECT relname, idx_tup_fetch + coalesce(seq_tup_read, 0)"
                " FROM pg_stat_xact_user_tables"
                " WHERE relname IN ('context_entries', 'context_any') ORDER BY 1"
            ).fetchall()
        assert len(taken_ids) == 20
        assert all(n < 300 for _, n in read), read  # the namespace holds 3,016 entries


@pytest.mark.parametrize(
    ("table", "key"),
    [("context_entries", "context_entries_pkey"), ("context_any", "context_any_pkey")],
)
def test_a_lookup_by_namespace_and_id_takes_the_primary_key_without_statistics(
    scratch_dsn: str, table: str, key: str
) -> None:
    # As read_context/ack_context plan it: generically, with no sequential scan, on a table
    # never analyzed. Another index led by the namespace would be walked whole per id.
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT coordd.post_context('up/q', 'p', 'planner', 'worker', '', 'job', '1', '',"
            " '', '1 hour', 'any', '{}', NULL, NULL, NULL) FROM generate_series(1, 5)"
        )
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET enable_seqscan = off")
        conn.execute(
            f"PREPARE probe(text, bigint) AS SELECT * FROM coordd.{table} x"
            " WHERE x.namespace = $1 AND x.id = $2"
        )
        plan = "\n".join(r for (r,) in conn.execute("EXPLAIN EXECUTE probe('up/q', 3)"))
    assert f"Index Scan using {key} on {table}" in plan, plan
    assert "Index Cond: ((namespace = $1) AND (id = $2))" in plan, plan


@pytest.mark.parametrize("analyzed", [False, True])
def test_a_reader_of_another_role_reads_its_entries_not_every_unexpired_one(
    scratch_dsn: str, analyzed: bool
) -> None:
    # A subscriber (not taking: unread_only false) of role "listener" in a namespace where
    # thousands of ANY entries went to "worker". Its generic plan once walked the expiry index,
    # every unexpired entry of every namespace per read (bench context's delivery latency).
    post = (
        "SELECT coordd.post_context(%s, 'p', 'planner', %s, '', 'job', to_jsonb(n), '', '',"
        " '1 hour', %s, '{}', NULL, NULL, NULL) FROM generate_series(1, %s) n"
    )
    read = (
        "SELECT id FROM coordd.read_context(%s, 's0', 'listener', false, '', '', %s, 100,"
        " '0 s', false)"
    )
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute(post, (NS, "worker", "any", 3000))
        [(after,)] = conn.execute(
            "SELECT max(id) FROM coordd.context_entries WHERE namespace = %s", (NS,)
        ).fetchall()
        conn.execute(post, (NS, "listener", "each", 3))
        conn.execute(post, (NS, "listener", "any", 2))
        if analyzed:
            conn.execute("ANALYZE coordd.context_entries")
            conn.execute("ANALYZE coordd.context_any")
        for _ in range(6):  # past PL/pgSQL's first five runs: the generic plan
            assert len(conn.execute(read, (NS, after)).fetchall()) == 5
        with conn.transaction():
            assert len(conn.execute(read, (NS, after)).fetchall()) == 5
            [(n,)] = conn.execute(
                "SELECT idx_tup_fetch + coalesce(seq_tup_read, 0) FROM pg_stat_xact_user_tables"
                " WHERE relname = 'context_entries'"
            ).fetchall()
        assert n < 100, n  # the namespace holds 3,005 unexpired entries
