-- coordd schema 5: per-namespace quotas and the usage they are checked against.
--
-- usage is kept by triggers on the tables it counts (sql/60_quotas.sql), inside each write's
-- transaction; a write that would pass a quota raises SQLSTATE CD002 and is undone whole.

CREATE TABLE coordd.quotas (
    namespace text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('memory', 'context', 'idempotency')),
    max_entries bigint NOT NULL DEFAULT 0,      -- 0: no limit
    max_bytes bigint NOT NULL DEFAULT 0,        -- 0: no limit
    PRIMARY KEY (namespace, kind)
);

CREATE TABLE coordd.usage (
    namespace text NOT NULL,
    kind text NOT NULL,
    entries bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, kind)
);

INSERT INTO coordd.usage (namespace, kind, entries, bytes)
SELECT namespace, 'memory', count(*),
       sum(octet_length(value::text) + octet_length(text) + coalesce(octet_length(embedding), 0))
FROM coordd.memory GROUP BY namespace;
INSERT INTO coordd.usage (namespace, kind, entries, bytes)
SELECT namespace, 'context', count(*), sum(octet_length(content::text))
FROM coordd.context_entries GROUP BY namespace;
INSERT INTO coordd.usage (namespace, kind, entries, bytes)
SELECT namespace, 'idempotency', count(*), sum(coalesce(octet_length(result), 0))
FROM coordd.idempotency GROUP BY namespace;
