-- coordd schema 4: atomic multi-claim (AcquireClaims) and agreements.
--
-- Lock order, as everywhere: namespace rows first, then entity rows. An agreement whose
-- transition writes memory in other namespaces locks every namespace involved, in name order,
-- before anything else (coordd.agreement_lock), so two such transactions never wait on each
-- other in a cycle; every other coordd transaction locks a single namespace row.

-- Agreements ---------------------------------------------------------------------------------

-- participants: [{"agent_id": text, "role": text, "count": int >= 1}], exactly one of
-- agent_id/role non-empty; seats = sum of counts. writes: the transition's memory writes, as
-- JSON objects (see coordd.agreement_apply_writes). state: pending | committed | aborted.
-- cause: '' | all_accepted | rejected | deadline_passed | withdrawn | transition_failed.
CREATE TABLE coordd.agreements (
    namespace text NOT NULL,
    id text NOT NULL,
    fingerprint bytea NOT NULL,
    proposer_agent_id text NOT NULL,
    proposer_role text NOT NULL,
    participants jsonb NOT NULL,
    seats integer NOT NULL,
    transition jsonb NOT NULL,
    writes jsonb NOT NULL DEFAULT '[]',
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'committed', 'aborted')),
    cause text NOT NULL DEFAULT '',
    reason text NOT NULL DEFAULT '',
    decided_by_agent_id text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL,
    deadline_time timestamptz NOT NULL,
    decide_time timestamptz,
    create_revision bigint NOT NULL,
    decide_revision bigint NOT NULL DEFAULT 0,
    retention interval NOT NULL,
    expire_time timestamptz,
    write_revisions jsonb NOT NULL DEFAULT '{}',  -- namespace -> revision of the writes
    PRIMARY KEY (namespace, id)
);
-- What the sweeper and the expiry checks scan: pending agreements by deadline.
CREATE INDEX agreements_pending ON coordd.agreements (deadline_time, namespace)
    WHERE state = 'pending';
CREATE INDEX agreements_expire_time ON coordd.agreements (expire_time)
    WHERE expire_time IS NOT NULL;

-- seat: index into participants of the seat the vote took; -1 for a proposer's withdrawal
-- when the proposer holds no seat.
CREATE TABLE coordd.agreement_votes (
    namespace text NOT NULL,
    agreement_id text NOT NULL,
    agent_id text NOT NULL,
    role text NOT NULL,
    seat integer NOT NULL,
    accept boolean NOT NULL,
    reason text NOT NULL DEFAULT '',
    vote_time timestamptz NOT NULL,
    revision bigint NOT NULL,
    PRIMARY KEY (namespace, agreement_id, agent_id),
    FOREIGN KEY (namespace, agreement_id) REFERENCES coordd.agreements ON DELETE CASCADE
);

-- status: 'ok', 'replayed' (identical proposal existed), 'exists' (id taken by another
-- proposal), 'not_found', 'decided' (vote after the decision), 'not_participant',
-- 'vote_conflict' (voted before, the other way). changed: this call wrote something (wake
-- local waiters). agreement: coordd.agreement_json, NULL when not found.
CREATE TYPE coordd.agreement_result AS (
    status text,
    ns_revision bigint,
    changed boolean,
    db_time timestamptz,
    agreement jsonb
);
