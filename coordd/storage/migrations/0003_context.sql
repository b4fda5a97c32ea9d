-- coordd schema 3: directional context entries, per-receiver acknowledgements, change-log
-- compaction.
--
-- An entry's id is the namespace revision of its post: unique in its namespace, increasing in
-- commit order and gapless across the namespace's writes, so it is a cursor that never skips an
-- entry committed late (a sequence-assigned id could).

CREATE TABLE coordd.context_entries (
    namespace text NOT NULL,
    id bigint NOT NULL,
    from_agent_id text NOT NULL,
    from_role text NOT NULL,
    to_role text NOT NULL DEFAULT '',
    to_agent_id text NOT NULL DEFAULT '',
    context_type text NOT NULL,
    content jsonb NOT NULL,
    task_id text NOT NULL DEFAULT '',
    correlation_id text NOT NULL DEFAULT '',
    delivery text NOT NULL CHECK (delivery IN ('each', 'any')),
    sender_vector jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL,
    expire_time timestamptz NOT NULL,
    -- ANY delivery: who took it, until when, and whether it was acknowledged.
    taker_agent_id text NOT NULL DEFAULT '',
    take_expire_time timestamptz,
    acked boolean NOT NULL DEFAULT false,
    PRIMARY KEY (namespace, id)
);
-- Inbox scans by delivery kind, so neither kind's backlog slows the other's reads.
CREATE INDEX context_each ON coordd.context_entries (namespace, to_role, id)
    WHERE delivery = 'each';
CREATE INDEX context_to_agent ON coordd.context_entries (namespace, to_agent_id, id)
    WHERE to_agent_id <> '';
CREATE INDEX context_from_agent ON coordd.context_entries (namespace, from_agent_id, id);
-- Open ANY entries: what takers scan; acknowledged ones drop out of the index.
CREATE INDEX context_open_any ON coordd.context_entries (namespace, to_role, id)
    WHERE delivery = 'any' AND NOT acked;
CREATE INDEX context_expire_time ON coordd.context_entries (expire_time);

CREATE TABLE coordd.context_acks (
    namespace text NOT NULL,
    entry_id bigint NOT NULL,
    agent_id text NOT NULL,
    role text NOT NULL,
    ack_time timestamptz NOT NULL,
    PRIMARY KEY (namespace, entry_id, agent_id),
    FOREIGN KEY (namespace, entry_id) REFERENCES coordd.context_entries ON DELETE CASCADE
);

-- One entry as returned to clients (content and vector as JSON text, acks as a JSON array).
CREATE TYPE coordd.context_row AS (
    ns_revision bigint,
    id bigint,
    from_agent_id text,
    from_role text,
    to_role text,
    to_agent_id text,
    context_type text,
    content text,
    task_id text,
    correlation_id text,
    delivery text,
    sender_vector text,
    create_time timestamptz,
    expire_time timestamptz,
    acks text
);

-- status: 'ok' or 'fence_stale' (current_token: the live token, -1 if unclaimed).
CREATE TYPE coordd.post_result AS (
    status text,
    ns_revision bigint,
    create_time timestamptz,
    expire_time timestamptz,
    current_token bigint
);

-- status 'ok' (acked: the ids acknowledged by this call) or 'fence_stale'.
CREATE TYPE coordd.ack_result AS (
    status text,
    ns_revision bigint,
    acked bigint[],
    current_token bigint
);
