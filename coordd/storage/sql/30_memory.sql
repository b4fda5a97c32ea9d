-- Memory functions (MemoryService).
--
-- Functions live here, not in migrations: every migrate applies every file of this folder, in
-- name order, with CREATE OR REPLACE, so changing a function is editing it here. Tables, types
-- and indexes are migrations (../migrations, numbered, append-only). A change of a function's
-- arguments or result type needs a migration that drops the old function first.

-- RFC 7386 JSON merge patch: objects merge key by key, null deletes, anything else replaces.
-- plpgsql, not sql: a sql function with a subquery is never inlined, so each merge write would
-- parse and plan it again (see coordd.now_for_plpgsql in 00_core.sql).
CREATE OR REPLACE FUNCTION coordd.jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE
        WHEN patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN patch
        ELSE (
            SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb)
            FROM (
                SELECT coalesce(t.key, p.key) AS k,
                       CASE WHEN p.key IS NULL THEN t.value
                            ELSE coordd.jsonb_merge_patch(t.value, p.value) END AS v
                FROM jsonb_each(CASE WHEN jsonb_typeof(target) = 'object' THEN target
                                     ELSE '{}'::jsonb END) t
                FULL JOIN jsonb_each(patch) p ON p.key = t.key
                WHERE p.key IS NULL OR jsonb_typeof(p.value) <> 'null'
            ) merged
        )
    END;
END $$;

-- Move the current version of (ns, key) to history, valid until p_time. plpgsql, not sql: a
-- sql function with a FROM is planned again in every transaction that calls it from PL/pgSQL
-- (see coordd.now_for_plpgsql in 00_core.sql).
CREATE OR REPLACE FUNCTION coordd.memory_retire(p_ns text, p_key text, p_time timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO coordd.memory_history
    SELECT m.*, p_time FROM coordd.memory m WHERE m.namespace = p_ns AND m.key = p_key
    ON CONFLICT DO NOTHING;
END $$;

-- One memory write with its write rule, inside the caller's transaction, without raising.
--
-- Contract (also for other SQL callers, e.g. agreement transitions): the caller must already
-- hold the namespace lock and pass the revision to use (p_rev); the function writes the entry,
-- retires the old version to history, and appends the change-log row (seq p_seq) but does NOT
-- touch coordd.namespaces: the caller bumps or undoes the revision depending on the status.
-- p_mode is 'lww', 'cas' or 'merge', or '' for the namespace policy's default.
-- p_expected is the CAS revision (0 = must not exist); NULL means unconditional.
CREATE OR REPLACE FUNCTION coordd.memory_apply(
    p_ns text, p_key text, p_tier smallint, p_value jsonb, p_text text, p_embedding bytea,
    p_dim integer, p_tags text[], p_task text, p_mode text, p_expected bigint, p_ttl interval,
    p_derived jsonb, p_review timestamptz, p_confidence real, p_agent text, p_role text,
    p_trace text, p_request text, p_rev bigint, p_seq integer, p_t timestamptz
) RETURNS coordd.memory_result
LANGUAGE plpgsql AS $$
DECLARE
    pol coordd.memory_policy;
    mode text := p_mode;
    cur coordd.memory;
    new_value jsonb := p_value;
    other_dim integer;
    lo_dim integer;
    hi_dim integer;
BEGIN
    SELECT * INTO pol FROM coordd.memory_policy WHERE namespace = p_ns;
    IF mode = '' THEN
        mode := CASE WHEN p_expected IS NOT NULL THEN 'cas'
                     ELSE coalesce(pol.default_mode, 'lww') END;
    END IF;
    IF mode = 'lww' AND coalesce(pol.forbid_unconditional, false) THEN
        RETURN ROW('unconditional_forbidden', 0, 0, 0, NULL, NULL, NULL, 0, 0)::coordd.memory_result;
    END IF;
    IF p_tier = 1 AND NOT EXISTS (
        SELECT 1 FROM coordd.tasks WHERE namespace = p_ns AND task_id = p_task
    ) THEN
        RETURN ROW('task_not_started', 0, 0, 0, NULL, NULL, NULL, 0, 0)::coordd.memory_result;
    END IF;
    IF p_dim > 0 THEN
        -- One embedding dimension per namespace: vectors of another dimension cannot be
        -- compared with its entries. Raised (SQLSTATE CD001, coordd's own) so that every
        -- caller's transaction, and whatever it already wrote, is undone. First the
        -- namespace's lowest and highest dimension, two probes of the memory_dim index (a
        -- condition "dim <> p_dim" would read every entry of the namespace); only when
        -- another dimension is present, whether it is other than this key's old version.
        SELECT min(m.dim), max(m.dim) INTO lo_dim, hi_dim FROM coordd.memory m
        WHERE m.namespace = p_ns AND m.dim > 0;
        IF lo_dim <> p_dim OR hi_dim <> p_dim THEN
            SELECT m.dim INTO other_dim FROM coordd.memory m
            WHERE m.namespace = p_ns AND m.dim > 0 AND m.dim <> p_dim AND m.key <> p_key
            LIMIT 1;
        END IF;
        IF other_dim IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'CD001',
                MESSAGE = format('embedding_dim %s %s', p_dim, other_dim);
        END IF;
    END IF;
    SELECT * INTO cur FROM coordd.memory WHERE namespace = p_ns AND key = p_key;
    IF cur.key IS NOT NULL AND cur.expire_time IS NOT NULL AND cur.expire_time <= p_t THEN
        -- an expired entry counts as absent
        PERFORM coordd.memory_retire(p_ns, p_key, cur.expire_time);
        DELETE FROM coordd.memory WHERE namespace = p_ns AND key = p_key;
        cur := NULL;
    END IF;
    IF mode = 'cas' AND coalesce(cur.revision, 0) <> coalesce(p_expected, 0) THEN
        RETURN ROW('revision_mismatch', 0, 0, 0, NULL, NULL, NULL, coalesce(cur.revision, 0),
                   0)::coordd.memory_result;
    END IF;
    IF mode = 'merge' THEN
        new_value := coordd.jsonb_merge_patch(cur.value, p_value);
    END IF;
    IF cur.key IS NOT NULL THEN
        PERFORM coordd.memory_retire(p_ns, p_key, p_t);
    END IF;
    INSERT INTO coordd.memory AS m (namespace, key, tier, value, text, embedding, dim, tags,
        task_id, revision, create_revision, agent_id, role, write_time, trace_id, request_id,
        derived_from, expire_time, valid_from, review_time, confidence)
    VALUES (p_ns, p_key, p_tier, new_value, p_text, p_embedding, p_dim, p_tags, p_task, p_rev,
        coalesce(cur.create_revision, p_rev), p_agent, p_role, p_t, p_trace, p_request,
        p_derived, p_t + p_ttl, p_t, p_review, p_confidence)
    ON CONFLICT (namespace, key) DO UPDATE SET
        tier = EXCLUDED.tier, value = EXCLUDED.value, text = EXCLUDED.text,
        embedding = EXCLUDED.embedding, dim = EXCLUDED.dim, tags = EXCLUDED.tags,
        task_id = EXCLUDED.task_id, revision = EXCLUDED.revision,
        create_revision = EXCLUDED.create_revision, agent_id = EXCLUDED.agent_id,
        role = EXCLUDED.role, write_time = EXCLUDED.write_time, trace_id = EXCLUDED.trace_id,
        request_id = EXCLUDED.request_id, derived_from = EXCLUDED.derived_from,
        expire_time = EXCLUDED.expire_time, valid_from = EXCLUDED.valid_from,
        review_time = EXCLUDED.review_time, confidence = EXCLUDED.confidence;
    PERFORM coordd.log_change(p_ns, p_rev, p_seq, 'memory', p_key, 'put', p_agent,
            jsonb_build_object('tier', p_tier, 'mode', mode), p_t);
    RETURN ROW('ok', p_rev, p_rev, coalesce(cur.create_revision, p_rev), p_t, p_t + p_ttl,
               new_value::text, p_rev, 0)::coordd.memory_result;
END $$;

-- PutMemory: lock and bump the namespace, check the fence, apply; undo the bump on refusal.
CREATE OR REPLACE FUNCTION coordd.memory_put(
    p_ns text, p_key text, p_tier smallint, p_value jsonb, p_text text, p_embedding bytea,
    p_dim integer, p_tags text[], p_task text, p_mode text, p_expected bigint, p_ttl interval,
    p_derived jsonb, p_review timestamptz, p_confidence real, p_agent text, p_role text,
    p_trace text, p_request text, p_fence_ns text, p_fence_resource text, p_fence_token bigint
) RETURNS coordd.memory_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
    token bigint;
    res coordd.memory_result;
BEGIN
    rev := coordd.bump_ns(p_ns);
    token := coordd.check_fence(p_fence_ns, p_fence_resource, p_fence_token);
    IF token <> 0 THEN
        res := ROW('fence_stale', rev - 1, 0, 0, NULL, NULL, NULL, 0, token)::coordd.memory_result;
    ELSE
        res := coordd.memory_apply(p_ns, p_key, p_tier, p_value, p_text, p_embedding, p_dim,
            p_tags, p_task, p_mode, p_expected, p_ttl, p_derived, p_review, p_confidence,
            p_agent, p_role, p_trace, p_request, rev, 0, t);
    END IF;
    IF res.status <> 'ok' THEN
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        res.ns_revision := rev - 1;
        RETURN res;
    END IF;
    PERFORM coordd.notify_watchers(p_ns);
    RETURN res;
END $$;

-- PutMemories: the writes of one batch in one statement, in order, all or nothing. Every
-- namespace of the batch is locked first, in name order (batches over the same namespaces
-- queue instead of deadlocking), then each entry is a memory_put; the first refusal is the
-- last row returned, and the caller rolls the transaction back. Arguments are memory_put's,
-- one array element per entry, except the caller's identity and trace (one for all) and the
-- tags (a JSON array per entry: SQL arrays cannot be ragged).
CREATE OR REPLACE FUNCTION coordd.memory_put_many(
    p_ns text[], p_key text[], p_tier smallint[], p_value jsonb[], p_text text[],
    p_embedding bytea[], p_dim integer[], p_tags jsonb[], p_task text[], p_mode text[],
    p_expected bigint[], p_ttl interval[], p_derived jsonb[], p_review timestamptz[],
    p_confidence real[], p_agent text, p_role text, p_trace text, p_request text[],
    p_fence_ns text[], p_fence_resource text[], p_fence_token bigint[]
) RETURNS SETOF coordd.memory_result
LANGUAGE plpgsql AS $$
DECLARE
    res coordd.memory_result;
BEGIN
    INSERT INTO coordd.namespaces (name, revision)
    SELECT DISTINCT unnest(p_ns), 0 ON CONFLICT DO NOTHING;
    PERFORM 1 FROM coordd.namespaces WHERE name = ANY(p_ns) ORDER BY name FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_key, 1), 0) LOOP
        res := coordd.memory_put(p_ns[i], p_key[i], p_tier[i], p_value[i], p_text[i],
            p_embedding[i], p_dim[i], ARRAY(SELECT jsonb_array_elements_text(p_tags[i])),
            p_task[i], p_mode[i], p_expected[i], p_ttl[i], p_derived[i], p_review[i],
            p_confidence[i], p_agent, p_role, p_trace, p_request[i], p_fence_ns[i],
            p_fence_resource[i], p_fence_token[i]);
        RETURN NEXT res;
        EXIT WHEN res.status <> 'ok';
    END LOOP;
END $$;

-- Delete keys of a namespace (retired to history), logging each: used by DeleteMemory,
-- EndTask, CompactEpisodes and retention. The caller holds the namespace lock; seq starts at
-- p_seq. Returns how many were deleted.
CREATE OR REPLACE FUNCTION coordd.memory_remove(
    p_ns text, p_keys text[], p_agent text, p_op text, p_rev bigint, p_seq integer,
    p_t timestamptz
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO coordd.memory_history
    SELECT m.*, p_t FROM coordd.memory m WHERE m.namespace = p_ns AND m.key = ANY(p_keys)
    ON CONFLICT DO NOTHING;
    WITH gone AS (
        DELETE FROM coordd.memory WHERE namespace = p_ns AND key = ANY(p_keys) RETURNING key
    ), logged AS (
        INSERT INTO coordd.changes
            (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
        SELECT p_ns, p_rev, p_seq + (row_number() OVER (ORDER BY key))::integer - 1, 'memory',
               key, p_op, p_agent, NULL, p_t
        FROM gone
        RETURNING 1
    )
    SELECT count(*) INTO n FROM logged;
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION coordd.memory_delete(
    p_ns text, p_key text, p_expected bigint, p_agent text,
    p_fence_ns text, p_fence_resource text, p_fence_token bigint
) RETURNS coordd.memory_delete_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
    token bigint;
    cur_rev bigint;
    n integer;
BEGIN
    rev := coordd.bump_ns(p_ns);
    token := coordd.check_fence(p_fence_ns, p_fence_resource, p_fence_token);
    SELECT revision INTO cur_rev FROM coordd.memory
    WHERE namespace = p_ns AND key = p_key AND (expire_time IS NULL OR expire_time > t);
    IF token <> 0 OR (p_expected IS NOT NULL AND coalesce(cur_rev, 0) <> p_expected)
       OR cur_rev IS NULL THEN
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        RETURN ROW(CASE WHEN token <> 0 THEN 'fence_stale'
                        WHEN p_expected IS NOT NULL AND coalesce(cur_rev, 0) <> p_expected
                        THEN 'revision_mismatch' ELSE 'ok' END,
                   rev - 1, 0, coalesce(cur_rev, 0), token)::coordd.memory_delete_result;
    END IF;
    n := coordd.memory_remove(p_ns, ARRAY[p_key], p_agent, 'delete', rev, 0, t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN ROW('ok', rev, n, 0, 0)::coordd.memory_delete_result;
END $$;

CREATE OR REPLACE FUNCTION coordd.memory_start_task(p_ns text, p_task text, p_agent text, p_lease interval)
RETURNS TABLE (ns_revision bigint, lease_expire_time timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
BEGIN
    rev := coordd.bump_ns(p_ns);
    INSERT INTO coordd.tasks AS k (namespace, task_id, agent_id, start_time, lease_expire_time)
    VALUES (p_ns, p_task, p_agent, t, t + p_lease)
    ON CONFLICT (namespace, task_id) DO UPDATE SET lease_expire_time = EXCLUDED.lease_expire_time;
    PERFORM coordd.log_change(p_ns, rev, 0, 'task', p_task, 'start', p_agent,
            jsonb_build_object('lease_expire_time', t + p_lease), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN QUERY SELECT rev, t + p_lease;
END $$;

CREATE OR REPLACE FUNCTION coordd.memory_end_task(
    p_ns text, p_task text, p_outcome text, p_archive boolean, p_summary jsonb, p_text text,
    p_embedding bytea, p_dim integer, p_agent text, p_role text, p_trace text
) RETURNS coordd.end_task_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
    keys text[];
    derived jsonb;
    summary jsonb;
    n integer;
    res coordd.memory_result;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM coordd.tasks WHERE namespace = p_ns AND task_id = p_task) THEN
        RETURN ROW('not_found', coordd.ns_revision(p_ns), 0, 0, NULL, NULL, NULL)
            ::coordd.end_task_result;
    END IF;
    rev := coordd.bump_ns(p_ns);
    SELECT array_agg(m.key ORDER BY m.key),
           coalesce(jsonb_agg(jsonb_build_object('namespace', p_ns, 'key', m.key,
                                                 'revision', m.revision) ORDER BY m.key), '[]'),
           coalesce(jsonb_object_agg(m.key, m.value), '{}')
    INTO keys, derived, summary
    FROM coordd.memory m
    WHERE m.namespace = p_ns AND m.task_id = p_task AND m.tier = 1;
    DELETE FROM coordd.tasks WHERE namespace = p_ns AND task_id = p_task;
    PERFORM coordd.log_change(p_ns, rev, 0, 'task', p_task, 'end', p_agent,
            jsonb_build_object('outcome', p_outcome), t);
    n := coalesce(coordd.memory_remove(p_ns, keys, p_agent, 'task_end', rev, 1, t), 0);
    IF p_archive THEN
        res := coordd.memory_apply(p_ns, 'task/' || p_task, 2::smallint,
            coalesce(p_summary, jsonb_build_object('outcome', p_outcome, 'entries', summary)),
            p_text, p_embedding, p_dim, ARRAY['task'], p_task, 'lww', NULL, NULL, derived,
            NULL, 0, p_agent, p_role, p_trace, '', rev, n + 1, t);
    END IF;
    PERFORM coordd.notify_watchers(p_ns);
    RETURN ROW('ok', rev, n, CASE WHEN p_archive THEN rev ELSE 0 END, t,
               CASE WHEN p_archive THEN res.value END, derived::text)::coordd.end_task_result;
END $$;

-- Replace episodes by a summary episode, atomically; the summary's derived_from lists them.
CREATE OR REPLACE FUNCTION coordd.memory_compact(
    p_ns text, p_keys text[], p_summary_key text, p_summary jsonb, p_text text,
    p_embedding bytea, p_dim integer, p_tags text[], p_agent text, p_role text, p_trace text
) RETURNS coordd.memory_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
    derived jsonb;
    found integer;
    n integer;
    res coordd.memory_result;
BEGIN
    rev := coordd.bump_ns(p_ns);
    SELECT count(*), coalesce(jsonb_agg(jsonb_build_object('namespace', p_ns, 'key', m.key,
                                                           'revision', m.revision)
                                        ORDER BY m.key), '[]')
    INTO found, derived
    FROM coordd.memory m
    WHERE m.namespace = p_ns AND m.key = ANY(p_keys) AND m.tier = 2;
    IF found <> cardinality(p_keys) THEN
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        RETURN ROW('not_found', rev - 1, 0, 0, NULL, NULL, NULL, found, 0)::coordd.memory_result;
    END IF;
    n := coordd.memory_remove(p_ns, p_keys, p_agent, 'compact', rev, 0, t);
    res := coordd.memory_apply(p_ns, p_summary_key, 2::smallint, p_summary, p_text, p_embedding,
        p_dim, p_tags, '', 'lww', NULL, NULL, derived, NULL, 0, p_agent, p_role, p_trace, '',
        rev, n, t);
    IF res.status <> 'ok' THEN
        RAISE EXCEPTION 'compaction summary refused: %', res.status;
    END IF;
    PERFORM coordd.notify_watchers(p_ns);
    RETURN res;
END $$;

CREATE OR REPLACE FUNCTION coordd.memory_set_policy(
    p_ns text, p_mode text, p_forbid boolean, p_max_age interval, p_max_count bigint,
    p_agent text
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
BEGIN
    rev := coordd.bump_ns(p_ns);
    INSERT INTO coordd.memory_policy AS p
        (namespace, default_mode, forbid_unconditional, episodic_max_age, episodic_max_count)
    VALUES (p_ns, p_mode, p_forbid, p_max_age, p_max_count)
    ON CONFLICT (namespace) DO UPDATE SET default_mode = EXCLUDED.default_mode,
        forbid_unconditional = EXCLUDED.forbid_unconditional,
        episodic_max_age = EXCLUDED.episodic_max_age,
        episodic_max_count = EXCLUDED.episodic_max_count;
    PERFORM coordd.log_change(p_ns, rev, 0, 'policy', p_ns, 'set', p_agent,
            jsonb_build_object('default_mode', p_mode, 'forbid_unconditional', p_forbid), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN rev;
END $$;

-- Sweeps: tasks whose lease lapsed end as expired (their working memory goes), episodes past
-- their namespace's retention (age or count) go, and entries past expire_time go, each logged
-- so Watch and the vector index learn of it.
CREATE OR REPLACE FUNCTION coordd.memory_sweep(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    task record;
    ns text;
    keys text[];
    rev bigint;
    n integer := 0;
BEGIN
    FOR task IN
        SELECT namespace, task_id FROM coordd.tasks WHERE lease_expire_time <= t LIMIT p_limit
    LOOP
        PERFORM coordd.memory_end_task(task.namespace, task.task_id, 'expired', false, NULL, '',
                                       NULL, 0, '', '', '');
        n := n + 1;
    END LOOP;
    FOR ns, keys IN
        SELECT x.namespace, array_agg(x.key) FROM (
            SELECT m.namespace, m.key FROM coordd.memory m
            WHERE m.expire_time IS NOT NULL AND m.expire_time <= t
            UNION
            SELECT m.namespace, m.key FROM coordd.memory m
            JOIN coordd.memory_policy p ON p.namespace = m.namespace
            WHERE m.tier = 2 AND p.episodic_max_age IS NOT NULL
              AND m.write_time < t - p.episodic_max_age
            UNION
            SELECT r.namespace, r.key FROM (
                SELECT m.namespace, m.key, p.episodic_max_count AS keep,
                       row_number() OVER (PARTITION BY m.namespace
                                          ORDER BY m.write_time DESC, m.key) AS nth
                FROM coordd.memory m JOIN coordd.memory_policy p ON p.namespace = m.namespace
                WHERE m.tier = 2 AND p.episodic_max_count > 0
            ) r WHERE r.nth > r.keep
        ) x GROUP BY x.namespace LIMIT p_limit
    LOOP
        SELECT revision + 1 INTO rev FROM coordd.namespaces WHERE name = ns
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        n := n + coordd.memory_remove(ns, keys, '', 'expire', rev, 0, t);
        UPDATE coordd.namespaces SET revision = rev WHERE name = ns;
        PERFORM coordd.notify_watchers(ns);
    END LOOP;
    RETURN n;
END $$;
