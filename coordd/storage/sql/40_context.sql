-- Context functions (ContextService).
--
-- Functions live here, not in migrations: every migrate applies every file of this folder, in
-- name order, with CREATE OR REPLACE, so changing a function is editing it here. Tables, types
-- and indexes are migrations (../migrations, numbered, append-only). A change of a function's
-- arguments or result type needs a migration that drops the old function first.

CREATE OR REPLACE FUNCTION coordd.context_acks_json(p_ns text, p_id bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('agent_id', a.agent_id, 'role', a.role,
                                                 'ack_time', a.ack_time) ORDER BY a.ack_time,
                              a.agent_id), '[]')::text
    FROM coordd.context_acks a WHERE a.namespace = p_ns AND a.entry_id = p_id
$$;

CREATE OR REPLACE FUNCTION coordd.post_context(
    p_ns text, p_agent text, p_role text, p_to_role text, p_to_agent text, p_type text,
    p_content jsonb, p_task text, p_correlation text, p_ttl interval, p_delivery text,
    p_vector jsonb, p_fence_ns text, p_fence_resource text, p_fence_token bigint
) RETURNS coordd.post_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
    current_token bigint;
BEGIN
    rev := coordd.bump_ns(p_ns);
    current_token := coordd.check_fence(p_fence_ns, p_fence_resource, p_fence_token);
    IF current_token <> 0 THEN
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        RETURN ROW('fence_stale'::text, rev - 1, NULL::timestamptz, NULL::timestamptz,
                   current_token);
    END IF;
    INSERT INTO coordd.context_entries (namespace, id, from_agent_id, from_role, to_role,
        to_agent_id, context_type, content, task_id, correlation_id, delivery, sender_vector,
        create_time, expire_time)
    VALUES (p_ns, rev, p_agent, p_role, p_to_role, p_to_agent, p_type, p_content, p_task,
        p_correlation, p_delivery, p_vector, t, t + p_ttl);
    IF p_delivery = 'any' THEN  -- its delivery state (migrations/0010_context_any_state.sql)
        INSERT INTO coordd.context_any (namespace, id, to_role, to_agent_id, expire_time)
        VALUES (p_ns, rev, p_to_role, p_to_agent, t + p_ttl);
    END IF;
    PERFORM coordd.log_change(p_ns, rev, 0, 'context', rev::text, 'post', p_agent,
            jsonb_build_object('to_role', p_to_role, 'to_agent_id', p_to_agent,
                               'context_type', p_type, 'delivery', p_delivery), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN ROW('ok'::text, rev, t, t + p_ttl, 0::bigint);
END $$;

-- Read the caller's inbox (or, with p_sent, what the caller posted). In unread mode, ANY
-- entries of the caller's role that nobody holds are first taken by the caller under p_lease
-- (a mutation, with its own revision and change-log row). Rows in id order, each with the
-- revision the page reflects (the take's own, if it took any); an empty page is one row with
-- a NULL id, carrying that revision.
--
-- Lock order for everything that touches existing entries (takes, acks): the ANY entries'
-- state rows (context_any, in id order) first, then the caller's count of entries held
-- (context_takers), then the namespace's revision row (held only for the bump, the log row and
-- the commit), then a fence's claim row. Takers skip rows another
-- taker holds (SKIP LOCKED), so concurrent takers of one role run in parallel and queue only
-- for the revision bump; posts and other
-- writes take the namespace row without touching existing entries, so no cycle can form.
CREATE OR REPLACE FUNCTION coordd.read_context(
    p_ns text, p_agent text, p_role text, p_unread boolean, p_type text, p_task text,
    p_after bigint, p_limit integer, p_lease interval, p_sent boolean
) RETURNS SETOF coordd.context_row
-- Generic plans from the first call. PL/pgSQL plans a statement's first five runs in each
-- connection with its arguments as constants; on a table never analyzed (a fresh queue) those
-- plans took the update of the taken ids, and the acks' lookups, by a namespace-wide index
-- scan (16,000 index tuples read per call at 16,000 entries). The generic plans use the
-- primary key, as measured on such a table (notes in bench/RESULTS.md).
SET plan_cache_mode = force_generic_plan
-- And no sequential scans: a generic plan made while a table holds a page or two scans it
-- sequentially, and the connection keeps that plan when the table has grown (3,000 rows read
-- per take and per ack at 3,000 entries). Every statement here has its index (or, for the
-- updates, the locked rows' addresses).
SET enable_seqscan = off
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
    taken bigint[];
    taken_tids tid[];
    held bigint[];
    held_before boolean;
    page coordd.context_row[];
BEGIN
    IF p_unread AND NOT p_sent AND p_role <> '' THEN
        -- Whether the caller may still hold entries from earlier takes (usually not: a batch
        -- is acknowledged before the next take). If not, what it holds after this take is what
        -- this take locked, and the lookup below is skipped (migrations/0013_context_takers.sql).
        held_before := EXISTS (
            SELECT 1 FROM coordd.context_takers h
            WHERE h.namespace = p_ns AND h.agent_id = p_agent AND h.held > 0
              AND h.lease_until > t);
        -- Ids and row addresses first, then update by address (a TID scan, whatever the
        -- statistics; the rows are locked, so their addresses hold). By id (`id = ANY(...)`),
        -- a generic plan made while the table was small and never analyzed reads the whole
        -- namespace per statement, and the connection keeps that plan as the table grows.
        -- The entry's type and task are read only when the caller filters on them.
        SELECT array_agg(id ORDER BY id), array_agg(tid) INTO taken, taken_tids FROM (
            SELECT k.id, k.ctid AS tid FROM coordd.context_any k
            WHERE k.namespace = p_ns AND k.to_role = p_role
              AND NOT k.acked AND k.expire_time > t AND k.id > p_after
              AND (k.take_expire_time IS NULL OR k.take_expire_time <= t)
              AND ((p_type = '' AND p_task = '') OR (
                  -- a scalar subquery, one primary-key probe per candidate (an EXISTS here
                  -- may be planned as a hash of the whole namespace)
                  SELECT (p_type = '' OR e.context_type = p_type)
                     AND (p_task = '' OR e.task_id = p_task)
                  FROM coordd.context_entries e WHERE e.namespace = p_ns AND e.id = k.id))
            -- Id order, spelled as context_any_queue's order (acked is false here), which
            -- no other index gives: see migrations/0008_context_open_queue.sql.
            ORDER BY k.acked, k.id LIMIT p_limit
            FOR NO KEY UPDATE SKIP LOCKED
        ) picked;
        IF taken IS NOT NULL THEN
            -- No indexed column changes: a heap-only update, no index entry written.
            UPDATE coordd.context_any
            SET taker_agent_id = p_agent, take_expire_time = t + p_lease
            WHERE ctid = ANY(taken_tids);
            -- The caller's count of entries held (its row locked after the entries', before
            -- the namespace row: the lock order of acks too).
            INSERT INTO coordd.context_takers AS h (namespace, agent_id, held, lease_until)
            VALUES (p_ns, p_agent, cardinality(taken), t + p_lease)
            ON CONFLICT (namespace, agent_id) DO UPDATE
            SET held = CASE WHEN h.lease_until > t THEN h.held ELSE 0 END + excluded.held,
                lease_until = greatest(h.lease_until, excluded.lease_until);
        END IF;
        -- What the caller holds now (its earlier takes and this one's): ids here, entries
        -- below, one primary-key probe each.
        IF NOT held_before THEN
            held := taken;
        ELSE  -- the role's open queue, walked for the caller's entries
            SELECT array_agg(id) INTO held FROM (
                SELECT k.id FROM coordd.context_any k
                WHERE k.namespace = p_ns AND k.to_role = p_role AND NOT k.acked
                  AND k.id > p_after AND k.taker_agent_id = p_agent AND k.take_expire_time > t
                ORDER BY k.acked, k.id LIMIT p_limit  -- context_any_queue's order
            ) mine;
        END IF;
    END IF;
    -- One index-friendly branch per kind of entry, merged in id order. Receipts: EACH entries'
    -- in context_acks; an ANY entry's one receipt on its state row (migrations/0009, 0010), or
    -- in context_acks if it was acknowledged before migration 9.
    -- The revision is read in the same statement (one snapshot) as the entries.
    SELECT array_agg(r ORDER BY (r).id) INTO page FROM (
        SELECT ROW((SELECT n.revision FROM coordd.namespaces n WHERE n.name = p_ns), e.id,
               e.from_agent_id, e.from_role, e.to_role, e.to_agent_id, e.context_type,
               e.content::text, e.task_id, e.correlation_id, e.delivery, e.sender_vector::text,
               e.create_time, e.expire_time,
               CASE WHEN e.delivery = 'each' THEN coordd.context_acks_json(p_ns, e.id)
                    WHEN e.held THEN '[]'  -- held by the caller: not acknowledged
                    ELSE (  -- the state row, by primary key
                        SELECT CASE WHEN NOT k.acked THEN '[]'
                                    WHEN k.ack_time IS NOT NULL THEN jsonb_build_array(
                                        jsonb_build_object('agent_id', k.taker_agent_id,
                                            'role', k.to_role, 'ack_time', k.ack_time))::text
                                    ELSE coordd.context_acks_json(p_ns, e.id) END
                        FROM coordd.context_any k WHERE k.namespace = p_ns AND k.id = e.id)
               END)::coordd.context_row AS r
        FROM (
            SELECT x.*, false AS held FROM coordd.context_entries x  -- what the caller posted
            WHERE p_sent AND x.namespace = p_ns AND x.from_agent_id = p_agent AND x.id > p_after
            UNION ALL
            SELECT x.*, false FROM coordd.context_entries x  -- to the caller by name
            WHERE NOT p_sent AND x.namespace = p_ns AND x.to_agent_id = p_agent
              AND x.id > p_after AND x.to_agent_id <> ''
            UNION ALL
            SELECT x.*, false FROM coordd.context_entries x  -- EACH, to the caller's role
            WHERE NOT p_sent AND p_role <> '' AND x.namespace = p_ns AND x.to_role = p_role
              AND x.id > p_after AND x.delivery = 'each'
            UNION ALL
            SELECT x.*, true FROM unnest(held) h(id)  -- ANY, unread: what the caller holds
            -- OFFSET 0 keeps the lookup a probe by both key columns per id; as a join or as
            -- `id = ANY(held)` a plan without statistics reads the whole namespace.
            CROSS JOIN LATERAL (SELECT y.* FROM coordd.context_entries y
                                WHERE y.namespace = p_ns AND y.id = h.id OFFSET 0) x
            UNION ALL
            SELECT x.*, false FROM coordd.context_entries x  -- ANY, all: every entry of the role
            WHERE NOT p_sent AND NOT p_unread AND p_role <> '' AND x.namespace = p_ns
              AND x.to_role = p_role AND x.id > p_after AND x.delivery = 'any'
        ) e
        -- Spelled IS TRUE so that it is a filter, never an index condition: pushed into each
        -- branch, a bare `expire_time > t` let the generic plan walk context_expire_time (every
        -- unexpired entry of every namespace) instead of the branch's own index
        -- (migrations/0012_context_any_by_role.sql).
        WHERE (e.expire_time > t) IS TRUE
          AND (p_type = '' OR e.context_type = p_type) AND (p_task = '' OR e.task_id = p_task)
          AND (p_sent OR NOT p_unread OR e.delivery = 'any' OR NOT EXISTS (
                  SELECT 1 FROM coordd.context_acks a
                  WHERE a.namespace = p_ns AND a.entry_id = e.id AND a.agent_id = p_agent))
        ORDER BY e.id
        LIMIT p_limit
    ) r;
    IF taken IS NOT NULL THEN
        -- Last, the namespace row: the lock is held for the bump, the log row and the commit.
        rev := coordd.bump_ns(p_ns);
        PERFORM coordd.log_change(p_ns, rev, 0, 'context', taken[1]::text, 'take', p_agent,
                jsonb_build_object('ids', to_jsonb(taken), 'lease_expire_time', t + p_lease), t);
        PERFORM coordd.notify_watchers(p_ns);
    END IF;
    IF page IS NULL THEN  -- an empty page: one row with no id, for the revision
        RETURN NEXT ROW(coalesce(rev, coordd.ns_revision(p_ns)), NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::coordd.context_row;
        RETURN;
    END IF;
    RETURN QUERY SELECT coalesce(rev, p.ns_revision, 0), p.id, p.from_agent_id, p.from_role,
        p.to_role, p.to_agent_id, p.context_type, p.content, p.task_id, p.correlation_id,
        p.delivery, p.sender_vector, p.create_time, p.expire_time, p.acks
    FROM unnest(page) p;
END $$;

-- Acknowledge entries addressed to the caller (its agent id or role). EACH: one receipt per
-- agent (context_acks). ANY: only the live taker (or anyone, once nobody holds it)
-- acknowledges, exactly once; the receipt is the state row's taker, role and ack_time.
-- Lock order as in read_context: the ANY state rows (in id order), then the namespace row, then
-- the fence's claim row. Without a fence the writes come before the namespace row, so the
-- revision lock is held only for the bump, the log row and the commit.
CREATE OR REPLACE FUNCTION coordd.ack_context(
    p_ns text, p_agent text, p_role text, p_ids bigint[],
    p_fence_ns text, p_fence_resource text, p_fence_token bigint
) RETURNS coordd.ack_result
SET plan_cache_mode = force_generic_plan  -- as read_context, above
SET enable_seqscan = off
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
    current_token bigint;
    acked bigint[];
    each_ids bigint[];
    any_ids bigint[];
    any_tids tid[];
    held_acked bigint;  -- of those, how many the caller held under a live lease
BEGIN
    -- One probe by both primary-key columns per id (OFFSET 0 keeps it one): by `id =
    -- ANY(p_ids)`, a generic plan made while the table was small and never analyzed reads the
    -- whole namespace per ack, and the connection keeps it. "IS FALSE" / "IS TRUE" rather than
    -- "NOT acked" / "= 'each'", so that no partial index (open queue, held, EACH) qualifies.
    -- ANY state rows are locked in id order (the probes run in the ids' order).
    SELECT array_agg(k.id ORDER BY k.id), array_agg(k.tid), count(*) FILTER (WHERE k.mine)
    INTO any_ids, any_tids, held_acked
    FROM (SELECT DISTINCT id FROM unnest(p_ids) id ORDER BY id) h
    CROSS JOIN LATERAL (
        SELECT x.id, x.ctid AS tid, (x.taker_agent_id = p_agent AND x.take_expire_time > t) AS mine
        FROM coordd.context_any x
        WHERE x.namespace = p_ns AND x.id = h.id AND x.acked IS FALSE AND x.expire_time > t
          AND (x.to_agent_id = p_agent OR (p_role <> '' AND x.to_role = p_role))
          AND (x.taker_agent_id = p_agent OR x.take_expire_time IS NULL
               OR x.take_expire_time <= t)
        OFFSET 0 FOR NO KEY UPDATE
    ) k;
    -- EACH entries among the rest (none when every id was an ANY entry acknowledgeable now,
    -- the batched take-and-ack's case: no probe then).
    SELECT array_agg(e.id) INTO each_ids
    FROM (SELECT DISTINCT id FROM unnest(p_ids) id
          WHERE cardinality(any_ids) IS DISTINCT FROM cardinality(p_ids)) h
    CROSS JOIN LATERAL (
        SELECT x.id FROM coordd.context_entries x
        WHERE x.namespace = p_ns AND x.id = h.id AND (x.delivery = 'each') IS TRUE
          AND x.expire_time > t
          AND (x.to_agent_id = p_agent OR (p_role <> '' AND x.to_role = p_role))
        OFFSET 0
    ) e;
    -- The caller's count of entries held (migrations/0013_context_takers.sql), before the
    -- namespace row as in takes; given back below if the fence turns out stale.
    IF held_acked > 0 THEN
        UPDATE coordd.context_takers SET held = greatest(held - held_acked, 0)
        WHERE namespace = p_ns AND agent_id = p_agent;
    END IF;
    IF p_fence_ns IS NOT NULL THEN  -- namespace, then claim: the order of every fenced write
        rev := coordd.bump_ns(p_ns);
        current_token := coordd.check_fence(p_fence_ns, p_fence_resource, p_fence_token);
        IF current_token <> 0 THEN
            UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
            IF held_acked > 0 THEN
                UPDATE coordd.context_takers SET held = held + held_acked
                WHERE namespace = p_ns AND agent_id = p_agent;
            END IF;
            RETURN ROW('fence_stale'::text, rev - 1, NULL::bigint[], current_token);
        END IF;
    END IF;
    IF any_ids IS NOT NULL THEN  -- locked above, still unacknowledged: all are acked now
        UPDATE coordd.context_any
        SET acked = true, taker_agent_id = p_agent, take_expire_time = NULL, ack_time = t
        WHERE ctid = ANY(any_tids);
    END IF;
    WITH receipts AS (  -- EACH: one receipt per agent, the first one counts
        INSERT INTO coordd.context_acks (namespace, entry_id, agent_id, role, ack_time)
        SELECT p_ns, id, p_agent, p_role, t FROM unnest(each_ids) AS id
        ON CONFLICT DO NOTHING
        RETURNING entry_id
    )
    SELECT array_agg(id ORDER BY id) INTO acked
    FROM (SELECT entry_id AS id FROM receipts UNION ALL SELECT unnest(any_ids)) done;
    IF acked IS NULL THEN
        IF rev IS NULL THEN
            RETURN ROW('ok'::text, coordd.ns_revision(p_ns), ARRAY[]::bigint[], 0::bigint);
        END IF;
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        RETURN ROW('ok'::text, rev - 1, ARRAY[]::bigint[], 0::bigint);
    END IF;
    IF rev IS NULL THEN  -- no fence: the namespace row only now, for the bump and the commit
        rev := coordd.bump_ns(p_ns);
    END IF;
    PERFORM coordd.log_change(p_ns, rev, 0, 'context', acked[1]::text, 'ack', p_agent,
            jsonb_build_object('ids', to_jsonb(acked)), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN ROW('ok'::text, rev, acked, 0::bigint);
END $$;

-- Delete up to p_limit expired entries with their ANY state rows (EACH receipts go by the
-- foreign key's cascade); how many entries went. The sweeper's context purge.
CREATE OR REPLACE FUNCTION coordd.purge_context(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH gone AS (
        DELETE FROM coordd.context_entries WHERE ctid IN (
            SELECT ctid FROM coordd.context_entries WHERE expire_time <= coordd.now()
            LIMIT p_limit)
        RETURNING namespace, id, delivery
    ), any_gone AS (
        DELETE FROM coordd.context_any k USING gone g
        WHERE g.delivery = 'any' AND k.namespace = g.namespace AND k.id = g.id
    )
    SELECT count(*)::integer INTO n FROM gone;
    -- Agents whose every lease has ended hold nothing: their counts go too.
    DELETE FROM coordd.context_takers WHERE ctid IN (
        SELECT ctid FROM coordd.context_takers WHERE lease_until <= coordd.now() LIMIT p_limit);
    RETURN n;
END $$;
