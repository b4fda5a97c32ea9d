-- Idempotency functions (IdempotencyService).
--
-- Functions live here, not in migrations: every migrate applies every file of this folder, in
-- name order, with CREATE OR REPLACE, so changing a function is editing it here. Tables, types
-- and indexes are migrations (../migrations, numbered, append-only). A change of a function's
-- arguments or result type needs a migration that drops the old function first.

-- plpgsql, not sql: a sql function of several columns is never inlined, so each transaction
-- calling it would parse and plan it again (see coordd.now_for_plpgsql in 00_core.sql).
CREATE OR REPLACE FUNCTION coordd.idem_row(p_status text, p_rev bigint, r coordd.idempotency,
                                p_now timestamptz, p_token bigint DEFAULT 0)
RETURNS coordd.idem_result
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN ROW(p_status, p_rev, r.state, r.attempt, r.fingerprint, r.result, r.error,
               r.runner_agent_id, r.create_time, r.lease_expire_time, r.expire_time,
               least(greatest(r.lease_expire_time - p_now, interval '0'), interval '5 seconds'),
               p_token)::coordd.idem_result;
END $$;

-- What Begin answers for an existing, unexpired record without changing it; NULL if Begin
-- must take the key (new attempt).
CREATE OR REPLACE FUNCTION coordd.idem_decide(r coordd.idempotency, p_fp bytea, t timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN r.fingerprint <> p_fp THEN 'reused'
        WHEN r.state = 'completed' THEN 'completed'
        WHEN r.state = 'failed' THEN 'failed'
        WHEN r.state = 'in_progress' AND r.lease_expire_time > t THEN 'in_progress'
        ELSE NULL
    END
$$;

CREATE OR REPLACE FUNCTION coordd.begin_idempotency(
    p_ns text, p_key text, p_fp bytea, p_agent text, p_lease interval, p_retention interval
) RETURNS coordd.idem_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    r coordd.idempotency;
    found_row record;
    rev bigint;
    verdict text;
    op text;
BEGIN
    -- The clock and the record in one read, without locking: replays cost no lock, no WAL.
    SELECT now() + k.offset_interval AS t, i AS r INTO found_row
    FROM coordd.clock k
    LEFT JOIN coordd.idempotency i ON i.namespace = p_ns AND i.key = p_key;
    t := found_row.t;
    r := found_row.r;
    IF r.key IS NOT NULL AND r.expire_time > t THEN
        verdict := coordd.idem_decide(r, p_fp, t);
        IF verdict IS NOT NULL THEN
            RETURN coordd.idem_row(verdict, coordd.ns_revision(p_ns), r, t);
        END IF;
    END IF;
    INSERT INTO coordd.namespaces AS n (name, revision) VALUES (p_ns, 1)
    ON CONFLICT (name) DO UPDATE SET revision = n.revision + 1
    RETURNING n.revision INTO rev;
    SELECT * INTO r FROM coordd.idempotency WHERE namespace = p_ns AND key = p_key FOR UPDATE;
    IF FOUND AND r.expire_time > t THEN
        verdict := coordd.idem_decide(r, p_fp, t);
        IF verdict IS NOT NULL THEN  -- decided by a concurrent Begin: undo the bump
            UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
            RETURN coordd.idem_row(verdict, rev - 1, r, t);
        END IF;
        -- A lapsed lease (runner died) or a retryable failure: the next attempt takes over.
        op := CASE WHEN r.state = 'released' THEN 'retry' ELSE 'takeover' END;
        UPDATE coordd.idempotency
        SET state = 'in_progress', attempt = attempt + 1, runner_agent_id = p_agent,
            lease_expire_time = t + p_lease, result = NULL, error = ''
        WHERE namespace = p_ns AND key = p_key
        RETURNING * INTO r;
    ELSE
        op := 'begin';
        INSERT INTO coordd.idempotency AS i (namespace, key, fingerprint, state, attempt,
            runner_agent_id, create_time, lease_expire_time, expire_time)
        VALUES (p_ns, p_key, p_fp, 'in_progress', 1, p_agent, t, t + p_lease, t + p_retention)
        ON CONFLICT (namespace, key) DO UPDATE SET   -- an expired record: start afresh
            fingerprint = EXCLUDED.fingerprint, state = 'in_progress', attempt = 1,
            result = NULL, error = '', runner_agent_id = EXCLUDED.runner_agent_id,
            create_time = EXCLUDED.create_time, lease_expire_time = EXCLUDED.lease_expire_time,
            expire_time = EXCLUDED.expire_time
        RETURNING * INTO r;
    END IF;
    INSERT INTO coordd.changes (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
    VALUES (p_ns, rev, 0, 'idempotency', p_key, op, p_agent,
            jsonb_build_object('attempt', r.attempt), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN coordd.idem_row('acquired', rev, r, t);
END $$;

-- Complete (p_outcome 'completed') or fail (p_outcome 'failed' terminal / 'released'
-- retryable) the attempt p_attempt, optionally fenced.
CREATE OR REPLACE FUNCTION coordd.finish_idempotency(
    p_ns text, p_key text, p_attempt bigint, p_outcome text, p_result bytea, p_error text,
    p_agent text, p_fence_ns text, p_fence_resource text, p_fence_token bigint
) RETURNS coordd.idem_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    r coordd.idempotency;
    rev bigint;
    current_token bigint;
    status text;
BEGIN
    INSERT INTO coordd.namespaces AS n (name, revision) VALUES (p_ns, 1)
    ON CONFLICT (name) DO UPDATE SET revision = n.revision + 1
    RETURNING n.revision INTO rev;
    current_token := coordd.check_fence(p_fence_ns, p_fence_resource, p_fence_token);
    SELECT * INTO r FROM coordd.idempotency WHERE namespace = p_ns AND key = p_key;
    status := CASE
        WHEN current_token <> 0 THEN 'fence_stale'
        WHEN r.key IS NULL OR r.expire_time <= t THEN 'not_found'
        WHEN r.attempt <> p_attempt THEN 'superseded'
        -- a retried Complete/Fail: already stored, nothing changes
        WHEN r.state = p_outcome AND (p_outcome <> 'completed' OR r.result = p_result) THEN 'ok'
        WHEN r.state <> 'in_progress' THEN 'superseded'
    END;
    IF status IS NOT NULL THEN  -- nothing to write: undo the bump
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        RETURN coordd.idem_row(status, rev - 1, r, t, current_token);
    END IF;
    UPDATE coordd.idempotency
    SET state = p_outcome, result = p_result, error = coalesce(p_error, ''),
        lease_expire_time = t
    WHERE namespace = p_ns AND key = p_key
    RETURNING * INTO r;
    INSERT INTO coordd.changes (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
    VALUES (p_ns, rev, 0, 'idempotency', p_key,
            CASE p_outcome WHEN 'completed' THEN 'complete'
                           WHEN 'failed' THEN 'fail' ELSE 'release' END,
            p_agent, jsonb_build_object('attempt', r.attempt), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN coordd.idem_row('ok', rev, r, t);
END $$;
