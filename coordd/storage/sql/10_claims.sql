-- Claim functions (ClaimService).
--
-- The hot paths below (acquire/renew/release, and begin/finish in 20_idempotency.sql) lock
-- and bump the namespace row by one upsert before the write; if the write then turns out not
-- to happen (a race lost between the unlocked check and the lock), the bump is undone in the
-- same transaction, before anyone could see it. These hot paths spell out the bump and the
-- change-log insert that the other write functions get from coordd.bump_ns and
-- coordd.log_change (00_core.sql): each plpgsql call costs about 5-7 us of PostgreSQL CPU, a
-- tenth of an acquire (measured, bench/RESULTS.md). Keep them in step with those helpers.
--
-- Functions live here, not in migrations: every migrate applies every file of this folder, in
-- name order, with CREATE OR REPLACE, so changing a function is editing it here. Tables, types
-- and indexes are migrations (../migrations, numbered, append-only). A change of a function's
-- arguments or result type needs a migration that drops the old function first.

-- plpgsql, not sql: a sql function of several columns is never inlined, so each transaction
-- calling it would parse and plan it again (see coordd.now_for_plpgsql in 00_core.sql).
CREATE OR REPLACE FUNCTION coordd.claim_row(p_status text, p_rev bigint, c coordd.claims)
RETURNS coordd.claim_result
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN ROW(p_status, p_rev, c.resource, c.holder_agent_id, c.holder_role, c.fencing_token,
               c.acquire_time, c.expire_time, c.progress)::coordd.claim_result;
END $$;

CREATE OR REPLACE FUNCTION coordd.acquire_claim(
    p_ns text, p_resource text, p_agent text, p_role text, p_ttl interval, p_progress text
) RETURNS coordd.claim_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    c coordd.claims;
    r record;
    rev bigint;
BEGIN
    -- The clock and the current claim in one read, without locking: a refused acquire then
    -- costs no lock and no WAL.
    SELECT now() + k.offset_interval AS t, cl AS c INTO r
    FROM coordd.clock k
    LEFT JOIN coordd.claims cl ON cl.namespace = p_ns AND cl.resource = p_resource;
    t := r.t;
    c := r.c;
    IF c.resource IS NOT NULL AND c.holder_agent_id <> p_agent AND c.expire_time > t THEN
        RETURN coordd.claim_row('held', coordd.ns_revision(p_ns), c);
    END IF;
    INSERT INTO coordd.namespaces AS n (name, revision) VALUES (p_ns, 1)
    ON CONFLICT (name) DO UPDATE SET revision = n.revision + 1
    RETURNING n.revision INTO rev;
    -- Take it if free or expired; renew (same token) if it is ours and live.
    INSERT INTO coordd.claims AS k (namespace, resource, holder_agent_id, holder_role,
                                    fencing_token, acquire_time, expire_time, progress)
    VALUES (p_ns, p_resource, p_agent, p_role, rev, t, t + p_ttl, p_progress)
    ON CONFLICT (namespace, resource) DO UPDATE SET
        holder_agent_id = EXCLUDED.holder_agent_id,
        holder_role = EXCLUDED.holder_role,
        fencing_token = CASE WHEN k.holder_agent_id = p_agent AND k.expire_time > t
                             THEN k.fencing_token ELSE EXCLUDED.fencing_token END,
        acquire_time = CASE WHEN k.holder_agent_id = p_agent AND k.expire_time > t
                            THEN k.acquire_time ELSE EXCLUDED.acquire_time END,
        expire_time = EXCLUDED.expire_time,
        progress = CASE WHEN k.holder_agent_id = p_agent AND k.expire_time > t
                             AND EXCLUDED.progress = '' THEN k.progress
                        ELSE EXCLUDED.progress END
    WHERE k.holder_agent_id = p_agent OR k.expire_time <= t
    RETURNING * INTO c;
    IF NOT FOUND THEN  -- taken between our check and our lock: undo the bump
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        SELECT * INTO c FROM coordd.claims WHERE namespace = p_ns AND resource = p_resource;
        RETURN coordd.claim_row('held', rev - 1, c);
    END IF;
    INSERT INTO coordd.changes (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
    VALUES (p_ns, rev, 0, 'claim', p_resource,
            CASE WHEN c.fencing_token = rev THEN 'acquire' ELSE 'renew' END, p_agent,
            jsonb_build_object('fencing_token', c.fencing_token, 'expire_time', c.expire_time),
            t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN coordd.claim_row('ok', rev, c);
END $$;

-- Claim the first free resource of p_resources (in order); 'held' if none is free.
CREATE OR REPLACE FUNCTION coordd.acquire_any_claim(
    p_ns text, p_resources text[], p_agent text, p_role text, p_ttl interval, p_progress text
) RETURNS coordd.claim_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    candidate text;
    res coordd.claim_result;
BEGIN
    -- Candidates that look free, expired or already ours, in list order (no locks taken);
    -- acquire_claim re-checks each under the namespace lock, so a raced pick moves on.
    FOR candidate IN
        SELECT r.resource
        FROM unnest(p_resources) WITH ORDINALITY AS r(resource, ord)
        LEFT JOIN coordd.claims c ON c.namespace = p_ns AND c.resource = r.resource
        WHERE c.resource IS NULL OR c.expire_time <= t OR c.holder_agent_id = p_agent
        ORDER BY r.ord
    LOOP
        res := coordd.acquire_claim(p_ns, candidate, p_agent, p_role, p_ttl, p_progress);
        IF res.status = 'ok' THEN
            RETURN res;
        END IF;
    END LOOP;
    RETURN coordd.claim_row('held', coordd.ns_revision(p_ns), NULL::coordd.claims);
END $$;

CREATE OR REPLACE FUNCTION coordd.renew_claim(
    p_ns text, p_resource text, p_agent text, p_token bigint, p_ttl interval, p_progress text
) RETURNS coordd.claim_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    c coordd.claims;
    rev bigint;
BEGIN
    INSERT INTO coordd.namespaces AS n (name, revision) VALUES (p_ns, 1)
    ON CONFLICT (name) DO UPDATE SET revision = n.revision + 1
    RETURNING n.revision INTO rev;
    UPDATE coordd.claims
    SET expire_time = t + p_ttl, progress = coalesce(p_progress, progress)
    WHERE namespace = p_ns AND resource = p_resource AND holder_agent_id = p_agent
      AND fencing_token = p_token AND expire_time > t
    RETURNING * INTO c;
    IF NOT FOUND THEN
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        SELECT * INTO c FROM coordd.claims
        WHERE namespace = p_ns AND resource = p_resource AND expire_time > t;
        RETURN coordd.claim_row('not_held', rev - 1, c);
    END IF;
    INSERT INTO coordd.changes (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
    VALUES (p_ns, rev, 0, 'claim', p_resource, 'renew', p_agent,
            jsonb_build_object('fencing_token', c.fencing_token, 'expire_time', c.expire_time,
                               'progress', c.progress), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN coordd.claim_row('ok', rev, c);
END $$;

CREATE OR REPLACE FUNCTION coordd.release_claim(
    p_ns text, p_resource text, p_agent text, p_token bigint
) RETURNS coordd.claim_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    c coordd.claims;
    rev bigint;
BEGIN
    INSERT INTO coordd.namespaces AS n (name, revision) VALUES (p_ns, 1)
    ON CONFLICT (name) DO UPDATE SET revision = n.revision + 1
    RETURNING n.revision INTO rev;
    DELETE FROM coordd.claims
    WHERE namespace = p_ns AND resource = p_resource AND holder_agent_id = p_agent
      AND fencing_token = p_token AND expire_time > t
    RETURNING * INTO c;
    IF NOT FOUND THEN
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        SELECT * INTO c FROM coordd.claims
        WHERE namespace = p_ns AND resource = p_resource AND expire_time > t;
        RETURN coordd.claim_row('not_held', rev - 1, c);
    END IF;
    INSERT INTO coordd.changes (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
    VALUES (p_ns, rev, 0, 'claim', p_resource, 'release', p_agent,
            jsonb_build_object('fencing_token', c.fencing_token), t);
    PERFORM coordd.notify_watchers(p_ns);
    RETURN coordd.claim_row('ok', rev, c);
END $$;

-- Remove expired claims, one revision per namespace, and log each expiry so watchers learn
-- of lost claims. Namespaces locked by a writer right now are skipped until the next sweep.
CREATE OR REPLACE FUNCTION coordd.sweep_claims(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    ns text;
    rev bigint;
    n integer := 0;
    got integer;
BEGIN
    FOR ns IN
        SELECT DISTINCT namespace FROM coordd.claims WHERE expire_time <= t LIMIT p_limit
    LOOP
        SELECT revision INTO rev FROM coordd.namespaces WHERE name = ns FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        rev := rev + 1;
        WITH gone AS (
            DELETE FROM coordd.claims
            WHERE namespace = ns AND expire_time <= t
            RETURNING resource, holder_agent_id, fencing_token, expire_time
        ), logged AS (
            INSERT INTO coordd.changes
                (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
            SELECT ns, rev, (row_number() OVER (ORDER BY resource))::integer - 1, 'claim',
                   resource, 'expire', '',
                   jsonb_build_object('fencing_token', fencing_token,
                                      'holder_agent_id', holder_agent_id,
                                      'expire_time', expire_time), t
            FROM gone
            RETURNING 1
        )
        SELECT count(*) INTO got FROM logged;
        IF got > 0 THEN
            UPDATE coordd.namespaces SET revision = rev WHERE name = ns;
            PERFORM coordd.notify_watchers(ns);
            n := n + got;
        END IF;
    END LOOP;
    RETURN n;
END $$;

-- Check a fence inside a write transaction: returns 0 if p_token is the live claim's token,
-- else the current token (-1 when the resource is not claimed). Takes the claim row FOR SHARE
-- so a takeover cannot commit between the check and the write.
CREATE OR REPLACE FUNCTION coordd.check_fence(p_ns text, p_resource text, p_token bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    c coordd.claims;
BEGIN
    IF p_ns IS NULL THEN
        RETURN 0;
    END IF;
    SELECT * INTO c FROM coordd.claims
    WHERE namespace = p_ns AND resource = p_resource FOR SHARE;
    IF NOT FOUND OR c.expire_time <= coordd.now_for_plpgsql() THEN
        RETURN -1;
    END IF;
    IF c.fencing_token <> p_token THEN
        RETURN c.fencing_token;
    END IF;
    RETURN 0;
END $$;

-- Claim every resource of p_resources, or none. One revision for the whole grant: every
-- resource newly taken gets fencing token = that revision, which is larger than any earlier
-- token of each resource (tokens are revisions of this namespace), so tokens stay strictly
-- increasing per resource. Resources the caller already holds are renewed and keep their token.
-- Change-log rows: seq 0..n-1 in request order. Returns one row per resource in request order
-- ('ok'), or one row per blocking claim of another agent ('held') and changes nothing.
CREATE OR REPLACE FUNCTION coordd.acquire_claims(
    p_ns text, p_resources text[], p_agent text, p_role text, p_ttl interval, p_progress text
) RETURNS SETOF coordd.claim_result
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    rev bigint;
BEGIN
    -- A refused grant costs no lock and no WAL: blockers seen without locking are final
    -- enough (they hold a live lease now), so answer them at once.
    IF EXISTS (
        SELECT 1 FROM coordd.claims c
        WHERE c.namespace = p_ns AND c.resource = ANY (p_resources)
          AND c.holder_agent_id <> p_agent AND c.expire_time > t
    ) THEN
        RETURN QUERY SELECT (coordd.claim_row('held', coordd.ns_revision(p_ns), c)).*
            FROM unnest(p_resources) WITH ORDINALITY AS r(resource, ord)
            JOIN coordd.claims c ON c.namespace = p_ns AND c.resource = r.resource
            WHERE c.holder_agent_id <> p_agent AND c.expire_time > t
            ORDER BY r.ord;
        RETURN;
    END IF;
    -- The namespace lock (and the bump) first; every claim writer takes it before claim rows,
    -- so the re-check below cannot be raced.
    rev := coordd.bump_ns(p_ns);
    IF EXISTS (
        SELECT 1 FROM coordd.claims c
        WHERE c.namespace = p_ns AND c.resource = ANY (p_resources)
          AND c.holder_agent_id <> p_agent AND c.expire_time > t
    ) THEN  -- taken between our check and our lock: undo the bump, answer the blockers
        UPDATE coordd.namespaces SET revision = revision - 1 WHERE name = p_ns;
        RETURN QUERY SELECT (coordd.claim_row('held', rev - 1, c)).*
            FROM unnest(p_resources) WITH ORDINALITY AS r(resource, ord)
            JOIN coordd.claims c ON c.namespace = p_ns AND c.resource = r.resource
            WHERE c.holder_agent_id <> p_agent AND c.expire_time > t
            ORDER BY r.ord;
        RETURN;
    END IF;
    -- The token rule below (take: token = rev; our own live claim: keep token, acquire time
    -- and, without new progress, progress) is acquire_claim's, written out again on purpose:
    -- a shared helper would add a call and an unnest to acquire_claim, the hottest statement.
    -- Change both together.
    RETURN QUERY
    WITH granted AS (
        INSERT INTO coordd.claims AS k (namespace, resource, holder_agent_id, holder_role,
                                        fencing_token, acquire_time, expire_time, progress)
        SELECT p_ns, r.resource, p_agent, p_role, rev, t, t + p_ttl, p_progress
        FROM unnest(p_resources) AS r(resource)
        -- Every conflicting row is free, expired or ours (checked under the lock above).
        ON CONFLICT (namespace, resource) DO UPDATE SET
            holder_agent_id = EXCLUDED.holder_agent_id,
            holder_role = EXCLUDED.holder_role,
            fencing_token = CASE WHEN k.holder_agent_id = p_agent AND k.expire_time > t
                                 THEN k.fencing_token ELSE EXCLUDED.fencing_token END,
            acquire_time = CASE WHEN k.holder_agent_id = p_agent AND k.expire_time > t
                                THEN k.acquire_time ELSE EXCLUDED.acquire_time END,
            expire_time = EXCLUDED.expire_time,
            progress = CASE WHEN k.holder_agent_id = p_agent AND k.expire_time > t
                                 AND EXCLUDED.progress = '' THEN k.progress
                            ELSE EXCLUDED.progress END
        RETURNING k.*
    ), ordered AS (
        SELECT g.*, r.ord FROM granted g
        JOIN unnest(p_resources) WITH ORDINALITY AS r(resource, ord) ON r.resource = g.resource
    ), logged AS (
        INSERT INTO coordd.changes
            (namespace, revision, seq, kind, key, op, agent_id, data, create_time)
        SELECT p_ns, rev, (o.ord - 1)::integer, 'claim', o.resource,
               CASE WHEN o.fencing_token = rev THEN 'acquire' ELSE 'renew' END, p_agent,
               jsonb_build_object('fencing_token', o.fencing_token, 'expire_time', o.expire_time),
               t
        FROM ordered o
    )
    SELECT 'ok'::text, rev, o.resource, o.holder_agent_id, o.holder_role, o.fencing_token,
           o.acquire_time, o.expire_time, o.progress
    FROM ordered o ORDER BY o.ord;
    PERFORM coordd.notify_watchers(p_ns);
END $$;
