-- Agreement functions (AgreementService).
--
-- Functions live here, not in migrations: every migrate applies every file of this folder, in
-- name order, with CREATE OR REPLACE, so changing a function is editing it here. Tables, types
-- and indexes are migrations (../migrations, numbered, append-only). A change of a function's
-- arguments or result type needs a migration that drops the old function first.

-- The helpers below are plpgsql, not sql: PostgreSQL never inlines a sql function with a FROM,
-- a subquery, several columns or several statements, so each transaction calling one from
-- PL/pgSQL would parse and plan it again (see coordd.now_for_plpgsql in 00_core.sql).

-- The agreement with its votes, as one JSON document (timestamps as ISO 8601 text).
CREATE OR REPLACE FUNCTION coordd.agreement_json(p_ns text, p_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    SELECT to_jsonb(a) - 'fingerprint' - 'retention' || jsonb_build_object(
        'votes', coalesce(v.votes, '[]'::jsonb), 'accepted', coalesce(v.accepted, 0))
    FROM coordd.agreements a
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object(
                   'agent_id', x.agent_id, 'role', x.role, 'seat', x.seat, 'accept', x.accept,
                   'reason', x.reason, 'vote_time', x.vote_time, 'revision', x.revision)
                   ORDER BY x.revision, x.vote_time, x.agent_id) AS votes,
               count(*) FILTER (WHERE x.accept AND x.seat >= 0)::integer AS accepted
        FROM coordd.agreement_votes x
        WHERE x.namespace = a.namespace AND x.agreement_id = a.id
    ) v ON true
    WHERE a.namespace = p_ns AND a.id = p_id);
END $$;

CREATE OR REPLACE FUNCTION coordd.agreement_row(
    p_status text, p_rev bigint, p_changed boolean, p_ns text, p_id text
) RETURNS coordd.agreement_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ROW(p_status, p_rev, p_changed, coordd.now_for_plpgsql(),
               coordd.agreement_json(p_ns, p_id))::coordd.agreement_result;
END $$;

-- Lock the agreement's namespace and those its transition writes touch, in name order (a
-- global order: no deadlock between agreements writing into each other's namespaces).
-- Returns p_ns's revision.
CREATE OR REPLACE FUNCTION coordd.agreement_lock(p_ns text, p_writes jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ns text;
    r bigint;
    rev bigint;
BEGIN
    FOR ns IN
        SELECT s.n FROM (
            SELECT p_ns AS n
            UNION  -- distinct
            SELECT w->>'namespace' FROM jsonb_array_elements(coalesce(p_writes, '[]')) AS w
        ) s
        ORDER BY s.n COLLATE "C"
    LOOP
        r := coordd.lock_ns(ns);
        IF ns = p_ns THEN
            rev := r;
        END IF;
    END LOOP;
    RETURN rev;
END $$;

-- The seat (participant index) a voter takes, or NULL if none: the agent_id participant
-- naming it; else a role participant of its role with a free seat. Call under the lock.
CREATE OR REPLACE FUNCTION coordd.agreement_seat(a coordd.agreements, p_agent text, p_role text)
RETURNS integer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    SELECT CASE
        WHEN named.ix IS NOT NULL THEN named.ix
        ELSE (
            SELECT (p.ord - 1)::integer
            FROM jsonb_array_elements(a.participants) WITH ORDINALITY AS p(v, ord)
            WHERE p_role <> '' AND p.v->>'role' = p_role
              AND (SELECT count(*) FROM coordd.agreement_votes x
                   WHERE x.namespace = a.namespace AND x.agreement_id = a.id
                     AND x.seat = p.ord - 1) < (p.v->>'count')::integer
            LIMIT 1)
    END
    FROM (
        SELECT (SELECT (p.ord - 1)::integer
                FROM jsonb_array_elements(a.participants) WITH ORDINALITY AS p(v, ord)
                WHERE p.v->>'agent_id' = p_agent
                LIMIT 1) AS ix
    ) named);
END $$;

-- Record the decision of a locked, pending agreement at revision p_rev (change-log row p_seq).
-- The caller bumps the namespace revision and notifies.
CREATE OR REPLACE FUNCTION coordd.agreement_decide(
    p_ns text, p_id text, p_state text, p_cause text, p_reason text, p_by text, p_rev bigint,
    p_time timestamptz, p_seq integer
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE coordd.agreements
    SET state = p_state, cause = p_cause, reason = p_reason, decided_by_agent_id = p_by,
        decide_time = p_time, decide_revision = p_rev, expire_time = p_time + retention
    WHERE namespace = p_ns AND id = p_id AND state = 'pending';
    PERFORM coordd.log_change(p_ns, p_rev, p_seq, 'agreement', p_id,
            CASE p_state WHEN 'committed' THEN 'commit' ELSE 'abort' END, p_by,
            jsonb_build_object('state', p_state, 'cause', p_cause, 'reason', p_reason), p_time);
END $$;

-- Record the expiry of pending agreements of a locked namespace whose deadline passed (p_id
-- NULL: all of them; else that one), in one revision. p_rev is the namespace's revision now;
-- returns it after (p_rev + 1 if anything expired). decide_time is the deadline itself.
CREATE OR REPLACE FUNCTION coordd.agreement_expire(p_ns text, p_id text, p_rev bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    a record;
    seq integer := 0;
BEGIN
    FOR a IN
        SELECT g.id, g.deadline_time, g.seats,
               (SELECT count(*) FROM coordd.agreement_votes x
                WHERE x.namespace = g.namespace AND x.agreement_id = g.id AND x.accept) AS yes
        FROM coordd.agreements g
        WHERE g.namespace = p_ns AND g.state = 'pending' AND g.deadline_time <= t
          AND (p_id IS NULL OR g.id = p_id)
        ORDER BY g.id
        FOR UPDATE OF g
    LOOP
        PERFORM coordd.agreement_decide(
            p_ns, a.id, 'aborted', 'deadline_passed',
            format('the deadline passed with %s of %s seats accepted', a.yes, a.seats), '',
            p_rev + 1, a.deadline_time, seq);
        seq := seq + 1;
    END LOOP;
    IF seq = 0 THEN
        RETURN p_rev;
    END IF;
    UPDATE coordd.namespaces SET revision = p_rev + 1 WHERE name = p_ns;
    PERFORM coordd.notify_watchers(p_ns);
    RETURN p_rev + 1;
END $$;

-- Apply the transition's memory writes inside the deciding transaction, each under its write
-- rule (coordd.memory_apply, Memory's "one write, no raise" function). Returns NULL if every
-- write applied, else why not, and then none is applied: the writes run in a sub-block whose
-- savepoint is rolled back by the first refusal (a subtransaction only when there are writes).
--
-- Revisions: writes to the agreement's namespace share the decision's revision p_rev (change-log
-- rows from p_seq on); each other namespace (locked by coordd.agreement_lock) is bumped once, its
-- writes sharing that one revision (seq 0, 1, ...). Each write JSON object: namespace, key,
-- tier (1 working, 2 episodic, 3 semantic), value (JSON), text, tags (array), task_id,
-- mode ('lww' | 'cas' | 'merge' | '' for the namespace default), expected_revision (NULL:
-- unconditional), ttl_s (NULL: no expiry), trace_id. Provenance: the proposer, request id
-- "agreement:<id>".
CREATE OR REPLACE FUNCTION coordd.agreement_apply_writes(
    a coordd.agreements, p_rev bigint, p_time timestamptz, p_seq integer
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    w jsonb;
    i integer := 0;
    res coordd.memory_result;
    bumped jsonb := '{}';  -- namespace -> [revision, next seq], for namespaces written so far
    ns text;
    rev bigint;
    seq integer;
    failure text;
BEGIN
    IF jsonb_array_length(a.writes) = 0 THEN
        RETURN NULL;
    END IF;
    BEGIN
        FOR w IN SELECT x.value FROM jsonb_array_elements(a.writes) AS x LOOP
            ns := w->>'namespace';
            IF bumped ? ns THEN
                rev := (bumped->ns->>0)::bigint;
                seq := (bumped->ns->>1)::integer;
            ELSIF ns = a.namespace THEN
                rev := p_rev;
                seq := p_seq;
            ELSE
                rev := coordd.ns_revision(ns) + 1;  -- locked by coordd.agreement_lock
                seq := 0;
            END IF;
            res := coordd.memory_apply(
                ns, w->>'key', (w->>'tier')::smallint, w->'value', coalesce(w->>'text', ''),
                NULL, 0, ARRAY(SELECT jsonb_array_elements_text(coalesce(w->'tags', '[]'))),
                coalesce(w->>'task_id', ''), coalesce(w->>'mode', ''),
                (w->>'expected_revision')::bigint,
                make_interval(secs => (w->>'ttl_s')::double precision), '[]'::jsonb, NULL, 0,
                a.proposer_agent_id, a.proposer_role, coalesce(w->>'trace_id', ''),
                'agreement:' || a.id, rev, seq, p_time);
            IF res.status <> 'ok' THEN
                failure := format('transition write %s (%s, key %s): %s', i, ns, w->>'key',
                    CASE res.status
                        WHEN 'revision_mismatch' THEN format(
                            'revision mismatch (expected %s, current %s)',
                            coalesce(w->>'expected_revision', '0'), res.current_revision)
                        WHEN 'unconditional_forbidden' THEN
                            'the namespace forbids unconditional writes'
                        WHEN 'task_not_started' THEN
                            format('task %s is not started', w->>'task_id')
                        ELSE res.status
                    END);
                RAISE EXCEPTION USING ERRCODE = 'CD001', MESSAGE = failure;
            END IF;
            bumped := jsonb_set(bumped, ARRAY[ns], jsonb_build_array(rev, seq + 1));
            i := i + 1;
        END LOOP;
        FOR ns, rev IN
            SELECT b.key, (b.value->>0)::bigint FROM jsonb_each(bumped) AS b
            WHERE b.key <> a.namespace
        LOOP
            UPDATE coordd.namespaces SET revision = rev WHERE name = ns;
            PERFORM coordd.notify_watchers(ns);
        END LOOP;
        UPDATE coordd.agreements
        SET write_revisions = (SELECT jsonb_object_agg(b.key, b.value->0)
                               FROM jsonb_each(bumped) AS b)
        WHERE namespace = a.namespace AND id = a.id;
    EXCEPTION WHEN SQLSTATE 'CD001' THEN
        RETURN failure;  -- the sub-block's writes are rolled back; nothing was applied
    END;
    RETURN NULL;
END $$;

-- Every seat accepted: apply the writes and commit, or abort if a write conflicts.
CREATE OR REPLACE FUNCTION coordd.agreement_complete(
    p_ns text, p_id text, p_by text, p_rev bigint, p_time timestamptz, p_seq integer
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    a coordd.agreements;
    failure text;
BEGIN
    SELECT * INTO a FROM coordd.agreements WHERE namespace = p_ns AND id = p_id;
    failure := coordd.agreement_apply_writes(a, p_rev, p_time, p_seq + 1);
    IF failure IS NULL THEN
        PERFORM coordd.agreement_decide(p_ns, p_id, 'committed', 'all_accepted', '', p_by,
                                        p_rev, p_time, p_seq);
    ELSE
        PERFORM coordd.agreement_decide(p_ns, p_id, 'aborted', 'transition_failed', failure,
                                        p_by, p_rev, p_time, p_seq);
    END IF;
END $$;

-- Record a vote of a locked, pending agreement at p_rev (change-log row p_seq) and decide if
-- it rejects or fills the last seat. Returns the next free change-log seq.
CREATE OR REPLACE FUNCTION coordd.agreement_cast(
    a coordd.agreements, p_agent text, p_role text, p_seat integer, p_accept boolean,
    p_reason text, p_rev bigint, p_time timestamptz, p_seq integer
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    accepted integer;
BEGIN
    INSERT INTO coordd.agreement_votes
        (namespace, agreement_id, agent_id, role, seat, accept, reason, vote_time, revision)
    VALUES (a.namespace, a.id, p_agent, p_role, p_seat, p_accept, p_reason, p_time, p_rev);
    PERFORM coordd.log_change(a.namespace, p_rev, p_seq, 'agreement', a.id, 'vote', p_agent,
            jsonb_build_object('accept', p_accept, 'seat', p_seat, 'reason', p_reason), p_time);
    IF NOT p_accept THEN  -- one reject decides; the proposer's reject is a withdrawal
        PERFORM coordd.agreement_decide(
            a.namespace, a.id, 'aborted',
            CASE WHEN p_agent = a.proposer_agent_id THEN 'withdrawn' ELSE 'rejected' END,
            CASE WHEN p_reason <> '' THEN p_reason
                 WHEN p_agent = a.proposer_agent_id THEN 'withdrawn by the proposer'
                 ELSE format('rejected by %s', p_agent) END,
            p_agent, p_rev, p_time, p_seq + 1);
        RETURN p_seq + 2;
    END IF;
    SELECT count(*) INTO accepted FROM coordd.agreement_votes
    WHERE namespace = a.namespace AND agreement_id = a.id AND accept AND seat >= 0;
    IF accepted >= a.seats THEN
        PERFORM coordd.agreement_complete(a.namespace, a.id, p_agent, p_rev, p_time, p_seq + 1);
        RETURN p_seq + 2;
    END IF;
    RETURN p_seq + 1;
END $$;

CREATE OR REPLACE FUNCTION coordd.propose_agreement(
    p_ns text, p_id text, p_fp bytea, p_agent text, p_role text, p_participants jsonb,
    p_transition jsonb, p_writes jsonb, p_deadline interval, p_retention interval,
    p_accept boolean
) RETURNS coordd.agreement_result
LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
    rev0 bigint;
    t timestamptz;
    a coordd.agreements;
    seat integer;
BEGIN
    rev := coordd.agreement_lock(p_ns, p_writes);
    t := coordd.now_for_plpgsql();
    SELECT * INTO a FROM coordd.agreements WHERE namespace = p_ns AND id = p_id FOR UPDATE;
    IF FOUND AND a.expire_time IS NOT NULL AND a.expire_time <= t THEN
        DELETE FROM coordd.agreements WHERE namespace = p_ns AND id = p_id;  -- due for purge
    ELSIF FOUND THEN
        rev0 := rev;
        rev := coordd.agreement_expire(p_ns, p_id, rev);
        RETURN coordd.agreement_row(
            CASE WHEN a.fingerprint = p_fp AND a.proposer_agent_id = p_agent
                 THEN 'replayed' ELSE 'exists' END,
            rev, rev <> rev0, p_ns, p_id);
    END IF;
    rev := rev + 1;
    INSERT INTO coordd.agreements (namespace, id, fingerprint, proposer_agent_id, proposer_role,
        participants, seats, transition, writes, create_time, deadline_time, create_revision,
        retention)
    SELECT p_ns, p_id, p_fp, p_agent, p_role, p_participants,
           (SELECT sum((p->>'count')::integer) FROM jsonb_array_elements(p_participants) p),
           p_transition, p_writes, t, t + p_deadline, rev, p_retention
    RETURNING * INTO a;
    PERFORM coordd.log_change(p_ns, rev, 0, 'agreement', p_id, 'propose', p_agent,
            jsonb_build_object('seats', a.seats, 'deadline_time', a.deadline_time), t);
    IF p_accept THEN
        seat := coordd.agreement_seat(a, p_agent, p_role);
        IF seat IS NOT NULL THEN
            PERFORM coordd.agreement_cast(a, p_agent, p_role, seat, true, '', rev, t, 1);
        END IF;
    END IF;
    UPDATE coordd.namespaces SET revision = rev WHERE name = p_ns;
    PERFORM coordd.notify_watchers(p_ns);
    RETURN coordd.agreement_row('ok', rev, true, p_ns, p_id);
END $$;

CREATE OR REPLACE FUNCTION coordd.vote_agreement(
    p_ns text, p_id text, p_agent text, p_role text, p_accept boolean, p_reason text
) RETURNS coordd.agreement_result
LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
    rev0 bigint;
    t timestamptz;
    a coordd.agreements;
    prior coordd.agreement_votes;
    seat integer;
BEGIN
    -- The write set never changes after the proposal: read it unlocked to know what to lock.
    SELECT * INTO a FROM coordd.agreements WHERE namespace = p_ns AND id = p_id;
    IF NOT FOUND THEN
        RETURN coordd.agreement_row('not_found', coordd.ns_revision(p_ns), false, p_ns, p_id);
    END IF;
    rev := coordd.agreement_lock(p_ns, a.writes);
    rev0 := rev;
    t := coordd.now_for_plpgsql();
    -- A passed deadline is decided here, in this transaction, before the vote is looked at.
    rev := coordd.agreement_expire(p_ns, p_id, rev);
    SELECT * INTO a FROM coordd.agreements WHERE namespace = p_ns AND id = p_id FOR UPDATE;
    IF NOT FOUND THEN  -- purged meanwhile
        RETURN coordd.agreement_row('not_found', rev, rev <> rev0, p_ns, p_id);
    END IF;
    SELECT * INTO prior FROM coordd.agreement_votes
    WHERE namespace = p_ns AND agreement_id = p_id AND agent_id = p_agent;
    IF FOUND AND prior.accept = p_accept THEN  -- a retry of one's vote: the current state
        RETURN coordd.agreement_row('ok', rev, rev <> rev0, p_ns, p_id);
    END IF;
    IF a.state <> 'pending' THEN
        RETURN coordd.agreement_row('decided', rev, rev <> rev0, p_ns, p_id);
    END IF;
    IF FOUND THEN
        -- Votes are final, except that the proposer may withdraw after accepting: its accept
        -- is replaced by the withdrawal (nobody saw a decision: the agreement is pending).
        IF p_agent <> a.proposer_agent_id OR p_accept THEN
            RETURN coordd.agreement_row('vote_conflict', rev, rev <> rev0, p_ns, p_id);
        END IF;
        DELETE FROM coordd.agreement_votes
        WHERE namespace = p_ns AND agreement_id = p_id AND agent_id = p_agent;
        seat := prior.seat;
    ELSE
        seat := coordd.agreement_seat(a, p_agent, p_role);
        IF seat IS NULL AND p_agent = a.proposer_agent_id AND NOT p_accept THEN
            seat := -1;  -- the proposer may always withdraw
        ELSIF seat IS NULL THEN
            RETURN coordd.agreement_row('not_participant', rev, false, p_ns, p_id);
        END IF;
    END IF;
    rev := rev + 1;
    PERFORM coordd.agreement_cast(a, p_agent, p_role, seat, p_accept, p_reason, rev, t, 0);
    UPDATE coordd.namespaces SET revision = rev WHERE name = p_ns;
    PERFORM coordd.notify_watchers(p_ns);
    RETURN coordd.agreement_row('ok', rev, true, p_ns, p_id);
END $$;

-- Read an agreement; a pending one past its deadline is recorded as ABORTED first (so no
-- reader ever sees PENDING after the deadline, and every reader sees the stored decision).
CREATE OR REPLACE FUNCTION coordd.get_agreement(p_ns text, p_id text) RETURNS coordd.agreement_result
LANGUAGE plpgsql AS $$
DECLARE
    a coordd.agreements;
    rev bigint;
    rev0 bigint;
BEGIN
    SELECT * INTO a FROM coordd.agreements WHERE namespace = p_ns AND id = p_id;
    IF NOT FOUND OR (a.expire_time IS NOT NULL AND a.expire_time <= coordd.now_for_plpgsql()) THEN
        RETURN ('not_found', coordd.ns_revision(p_ns), false, coordd.now_for_plpgsql(), NULL)
            ::coordd.agreement_result;
    END IF;
    IF a.state <> 'pending' OR a.deadline_time > coordd.now_for_plpgsql() THEN
        RETURN coordd.agreement_row('ok', coordd.ns_revision(p_ns), false, p_ns, p_id);
    END IF;
    rev := coordd.lock_ns(p_ns);
    rev0 := rev;
    rev := coordd.agreement_expire(p_ns, p_id, rev);
    RETURN coordd.agreement_row('ok', rev, rev <> rev0, p_ns, p_id);
END $$;

-- A page of agreements ordered by id (after p_after), expiries recorded first as for get.
CREATE OR REPLACE FUNCTION coordd.list_agreements(
    p_ns text, p_state text, p_proposer text, p_after text, p_limit integer
) RETURNS SETOF coordd.agreement_result
LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
    rev0 bigint;
    t timestamptz := coordd.now_for_plpgsql();
BEGIN
    IF EXISTS (SELECT 1 FROM coordd.agreements
               WHERE namespace = p_ns AND state = 'pending' AND deadline_time <= t) THEN
        rev := coordd.lock_ns(p_ns);
        rev0 := rev;
        rev := coordd.agreement_expire(p_ns, NULL, rev);
    ELSE
        rev := coordd.ns_revision(p_ns);
        rev0 := rev;
    END IF;
    RETURN QUERY
    SELECT 'ok'::text, rev, rev <> rev0, t, coordd.agreement_json(a.namespace, a.id)
    FROM coordd.agreements a
    WHERE a.namespace = p_ns AND a.id > p_after
      AND (p_state = '' OR a.state = p_state)
      AND (p_proposer = '' OR a.proposer_agent_id = p_proposer)
      AND (a.expire_time IS NULL OR a.expire_time > t)
    ORDER BY a.id
    LIMIT p_limit;
END $$;

-- Sweeper: record the expiry of pending agreements past their deadline, one revision per
-- namespace; namespaces locked by a writer right now are skipped until the next sweep.
CREATE OR REPLACE FUNCTION coordd.sweep_agreements(p_limit integer)
RETURNS TABLE (namespace text, expired integer)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coordd.now_for_plpgsql();
    ns text;
    rev bigint;
    rev1 bigint;
BEGIN
    FOR ns IN
        SELECT DISTINCT g.namespace FROM coordd.agreements g
        WHERE g.state = 'pending' AND g.deadline_time <= t
        LIMIT p_limit
    LOOP
        SELECT n.revision INTO rev FROM coordd.namespaces n WHERE n.name = ns
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        rev1 := coordd.agreement_expire(ns, NULL, rev);
        IF rev1 > rev THEN
            namespace := ns;
            SELECT count(*)::integer INTO expired FROM coordd.changes c
            WHERE c.namespace = ns AND c.revision = rev1;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;
