-- coordd schema 1: namespaces and revisions, change log, clock, claims, idempotency.
--
-- Every mutating operation is one SQL function call, so one round trip and one transaction.
-- Lock order, always: the namespace row first (coordd.lock_ns), then claim or entry rows.
-- Fence checks take claim rows FOR SHARE after the writer's own namespace lock; claim writers
-- take their own namespace lock before the claim row, so the order has no cycle.

CREATE SCHEMA IF NOT EXISTS coordd;

-- The database clock coordd uses. The offset exists for tests, which advance time instead of
-- sleeping; it is only reachable through SQL, never through the API.
CREATE TABLE coordd.clock (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    offset_interval interval NOT NULL DEFAULT '0'
);
INSERT INTO coordd.clock DEFAULT VALUES;

-- One row per namespace: its revision domain.
CREATE TABLE coordd.namespaces (
    name text PRIMARY KEY,
    revision bigint NOT NULL DEFAULT 0,
    compact_revision bigint NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now()
);

-- The change log: one row per mutation, (namespace, revision) in commit order.
CREATE TABLE coordd.changes (
    namespace text NOT NULL,
    revision bigint NOT NULL,
    seq integer NOT NULL DEFAULT 0,
    kind text NOT NULL,
    key text NOT NULL,
    op text NOT NULL,
    agent_id text NOT NULL DEFAULT '',
    data jsonb,
    create_time timestamptz NOT NULL,
    PRIMARY KEY (namespace, revision, seq)
);
CREATE INDEX changes_create_time ON coordd.changes (create_time);

-- Who watches what: daemons register the namespaces (or prefixes) their Watch and Subscribe
-- streams care about, under a lease they refresh. A write NOTIFYs only when some registration
-- matches: PostgreSQL serializes the commits of notifying transactions, so a NOTIFY on every
-- write would cost everyone (measured: -42 % throughput at 16 writers).
CREATE TABLE coordd.interest (
    daemon_id text NOT NULL,
    pattern text NOT NULL,          -- a namespace, or a prefix when is_prefix
    is_prefix boolean NOT NULL,
    expire_time timestamptz NOT NULL,
    PRIMARY KEY (daemon_id, pattern, is_prefix)
);

-- Claims -------------------------------------------------------------------------------------

CREATE TABLE coordd.claims (
    namespace text NOT NULL,
    resource text NOT NULL,
    holder_agent_id text NOT NULL,
    holder_role text NOT NULL DEFAULT '',
    fencing_token bigint NOT NULL,
    acquire_time timestamptz NOT NULL,
    expire_time timestamptz NOT NULL,
    progress text NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, resource)
);
CREATE INDEX claims_expire_time ON coordd.claims (expire_time);

-- Outcome rows of the claim functions: status is 'ok', 'held' (someone else holds it) or
-- 'not_held' (renew/release by a non-holder); the claim columns describe the claim as it now
-- stands (empty when there is none).
CREATE TYPE coordd.claim_result AS (
    status text,
    ns_revision bigint,
    resource text,
    holder_agent_id text,
    holder_role text,
    fencing_token bigint,
    acquire_time timestamptz,
    expire_time timestamptz,
    progress text
);

-- Idempotency --------------------------------------------------------------------------------

-- state: in_progress (a runner holds it), completed, failed (terminal), released (retryable
-- failure: the next Begin runs again).
CREATE TABLE coordd.idempotency (
    namespace text NOT NULL,
    key text NOT NULL,
    fingerprint bytea NOT NULL,
    state text NOT NULL,
    attempt bigint NOT NULL,
    result bytea,
    error text NOT NULL DEFAULT '',
    runner_agent_id text NOT NULL,
    create_time timestamptz NOT NULL,
    lease_expire_time timestamptz NOT NULL,
    expire_time timestamptz NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX idempotency_expire_time ON coordd.idempotency (expire_time);

-- status: 'acquired', 'completed', 'in_progress', 'failed', 'reused' (fingerprint mismatch),
-- 'not_found', 'superseded', 'fence_stale' (current_token says what is live).
CREATE TYPE coordd.idem_result AS (
    status text,
    ns_revision bigint,
    state text,
    attempt bigint,
    fingerprint bytea,
    result bytea,
    error text,
    runner_agent_id text,
    create_time timestamptz,
    lease_expire_time timestamptz,
    expire_time timestamptz,
    retry_after interval,
    current_token bigint
);
