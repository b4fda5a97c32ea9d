-- Core functions: the database clock, namespace revisions, watcher notification, change-log
-- compaction.
--
-- Functions live here, not in migrations: every migrate applies every file of this folder, in
-- name order, with CREATE OR REPLACE, so changing a function is editing it here. Tables, types
-- and indexes are migrations (../migrations, numbered, append-only). A change of a function's
-- arguments or result type needs a migration that drops the old function first.

CREATE OR REPLACE FUNCTION coordd.now() RETURNS timestamptz
LANGUAGE sql STABLE AS $$ SELECT now() + offset_interval FROM coordd.clock $$;

-- The same clock for PL/pgSQL assignments (`t timestamptz := coordd.now_for_plpgsql();`).
-- PL/pgSQL keeps a simple expression's state for one transaction only, so `t := coordd.now()`
-- parses, analyzes and plans the SQL function above in every transaction: 175 us per call
-- against 30 us for this one, whose statement PL/pgSQL plans once per session (measured, notes
-- in bench/RESULTS.md, "Session 17, context"). Inside queries keep coordd.now(): called per
-- row there, the SQL function is the cheaper one (1.3 vs 2.8 us a row).
CREATE OR REPLACE FUNCTION coordd.now_for_plpgsql() RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN now() + (SELECT offset_interval FROM coordd.clock);
END $$;

CREATE OR REPLACE FUNCTION coordd.notify_watchers(p_ns text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM coordd.interest
        WHERE expire_time > now()
          AND (pattern = p_ns OR (is_prefix AND left(p_ns, length(pattern) + 1) = pattern || '/'))
    ) THEN
        PERFORM pg_notify('coordd_changes', p_ns);
    END IF;
END $$;

-- Lock a namespace's row (creating it at revision 0) and return its current revision.
CREATE OR REPLACE FUNCTION coordd.lock_ns(p_ns text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
BEGIN
    SELECT revision INTO rev FROM coordd.namespaces WHERE name = p_ns FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO coordd.namespaces (name) VALUES (p_ns) ON CONFLICT (name) DO NOTHING;
        SELECT revision INTO rev FROM coordd.namespaces WHERE name = p_ns FOR UPDATE;
    END IF;
    RETURN rev;
END $$;

-- plpgsql, not sql, as the helpers below: a sql function with a subquery is never inlined, so
-- each transaction (or statement) calling it would parse and plan it again.
CREATE OR REPLACE FUNCTION coordd.ns_revision(p_ns text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT revision FROM coordd.namespaces WHERE name = p_ns), 0);
END $$;

-- Lock a namespace's row and take its next revision (creating the row at revision 1), in one
-- upsert: the hot writers' first step. A write that then does not happen gives the revision
-- back (UPDATE ... SET revision = revision - 1) in the same transaction, before anyone sees it.
-- plpgsql, not sql, so that the upsert's plan is cached for the session.
CREATE OR REPLACE FUNCTION coordd.bump_ns(p_ns text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
BEGIN
    INSERT INTO coordd.namespaces AS n (name, revision) VALUES (p_ns, 1)
    ON CONFLICT (name) DO UPDATE SET revision = n.revision + 1
    RETURNING n.revision INTO rev;
    RETURN rev;
END $$;

-- Append one change-log row: what Watch streams, caches and the vector indexes read. Row p_seq
-- of revision p_rev (a revision's rows are numbered from 0).
CREATE OR REPLACE FUNCTION coordd.log_change(
    p_ns text, p_rev bigint, p_seq integer, p_kind text, p_key text, p_op text, p_agent text,
    p_data jsonb, p_time timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO coordd.changes (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
    VALUES (p_ns, p_rev, p_seq, p_kind, p_key, p_op, p_agent, p_data, p_time);
END $$;

-- Record revision p_rev of a namespace locked by lock_ns, with its first change-log row.
CREATE OR REPLACE FUNCTION coordd.commit_rev(
    p_ns text, p_rev bigint, p_kind text, p_key text, p_op text, p_agent text, p_data jsonb,
    p_time timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE coordd.namespaces SET revision = p_rev WHERE name = p_ns;
    PERFORM coordd.log_change(p_ns, p_rev, 0, p_kind, p_key, p_op, p_agent, p_data, p_time);
    PERFORM coordd.notify_watchers(p_ns);
END $$;

-- Delete up to p_limit rows of p_table (a coordd table with an expire_time column) whose
-- expiry has passed; how many went. The sweeper's purge of idempotency records, context
-- entries and decided agreements.
CREATE OR REPLACE FUNCTION coordd.purge_expired(p_table regclass, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    EXECUTE format(
        'WITH gone AS (DELETE FROM %1$s WHERE ctid IN ('
        '    SELECT ctid FROM %1$s WHERE expire_time <= coordd.now() LIMIT $1) RETURNING 1)'
        ' SELECT count(*)::integer FROM gone', p_table)
    INTO n USING p_limit;
    RETURN n;
END $$;

-- Drop change-log rows older than p_before, namespace by namespace, and record where each
-- namespace's log now starts (a Watch from before that fails with REVISION_COMPACTED).
CREATE OR REPLACE FUNCTION coordd.compact_changes(p_before timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ns text;
    upto bigint;
    n integer := 0;
    got integer;
BEGIN
    FOR ns, upto IN
        SELECT namespace, max(revision) FROM coordd.changes
        WHERE create_time < p_before GROUP BY namespace LIMIT p_limit
    LOOP
        DELETE FROM coordd.changes WHERE namespace = ns AND revision <= upto;
        GET DIAGNOSTICS got = ROW_COUNT;
        UPDATE coordd.namespaces SET compact_revision = greatest(compact_revision, upto + 1)
        WHERE name = ns;
        n := n + got;
    END LOOP;
    RETURN n;
END $$;
