-- coordd schema 2: memory (working, episodic, semantic), tasks, namespace policies.
--
-- coordd.memory holds the current version of each key; every version it replaces (or deletes)
-- moves to coordd.memory_history with valid_to set, so History and "as of" reads see them.
-- Embeddings are float32 little-endian bytea; the in-process HNSW index is derived from these
-- rows through the change log (kind 'memory') and can always be rebuilt.

CREATE TABLE coordd.memory (
    namespace text NOT NULL,
    key text NOT NULL,
    tier smallint NOT NULL,                 -- 1 working, 2 episodic, 3 semantic
    value jsonb NOT NULL,
    text text NOT NULL DEFAULT '',
    embedding bytea,
    dim integer NOT NULL DEFAULT 0,
    tags text[] NOT NULL DEFAULT '{}',
    task_id text NOT NULL DEFAULT '',
    revision bigint NOT NULL,
    create_revision bigint NOT NULL,
    agent_id text NOT NULL,
    role text NOT NULL,
    write_time timestamptz NOT NULL,
    trace_id text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    derived_from jsonb NOT NULL DEFAULT '[]',
    expire_time timestamptz,
    valid_from timestamptz NOT NULL,
    review_time timestamptz,
    confidence real NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX memory_task ON coordd.memory (namespace, task_id) WHERE task_id <> '';
CREATE INDEX memory_episodic ON coordd.memory (namespace, write_time) WHERE tier = 2;
CREATE INDEX memory_expire ON coordd.memory (expire_time) WHERE expire_time IS NOT NULL;

CREATE TABLE coordd.memory_history (LIKE coordd.memory);
ALTER TABLE coordd.memory_history ADD COLUMN valid_to timestamptz NOT NULL;
ALTER TABLE coordd.memory_history ADD PRIMARY KEY (namespace, key, revision);

CREATE TABLE coordd.memory_policy (
    namespace text PRIMARY KEY,
    default_mode text NOT NULL DEFAULT 'lww' CHECK (default_mode IN ('lww', 'cas', 'merge')),
    forbid_unconditional boolean NOT NULL DEFAULT false,
    episodic_max_age interval,
    episodic_max_count bigint NOT NULL DEFAULT 0
);

CREATE TABLE coordd.tasks (
    namespace text NOT NULL,
    task_id text NOT NULL,
    agent_id text NOT NULL,
    start_time timestamptz NOT NULL,
    lease_expire_time timestamptz NOT NULL,
    PRIMARY KEY (namespace, task_id)
);
CREATE INDEX tasks_lease ON coordd.tasks (lease_expire_time);

-- status: 'ok', 'revision_mismatch' (current_revision), 'fence_stale' (current_token),
-- 'unconditional_forbidden', 'task_not_started'. On 'ok', revision is the new version's.
CREATE TYPE coordd.memory_result AS (
    status text,
    ns_revision bigint,
    revision bigint,
    create_revision bigint,
    write_time timestamptz,
    expire_time timestamptz,
    value text,
    current_revision bigint,
    current_token bigint
);

CREATE TYPE coordd.memory_delete_result AS (
    status text, ns_revision bigint, deleted integer, current_revision bigint,
    current_token bigint
);

-- End a task: its working memory goes in this one transaction; with p_archive it becomes one
-- episodic entry "task/<id>" whose derived_from lists the entries it came from.
CREATE TYPE coordd.end_task_result AS (
    status text, ns_revision bigint, removed integer, episode_revision bigint,
    write_time timestamptz, summary text, derived text
);
