-- coordd schema 10: an ANY entry's delivery state (taker, lease, receipt) in a narrow table.
--
-- A take sets an ANY entry's taker and lease; its acknowledgement sets the receipt and drops it
-- from the open queue. On context_entries each of those updates wrote a new version of the
-- whole row (content included) and, because they change indexed columns (the open-queue and
-- held indexes), a new entry in every index of the table: five per take, three per ack (primary
-- key, sender, expiry, queue, held). That index maintenance was the largest part of
-- PostgreSQL's CPU per entry in a batched take-and-ack (bench/RESULTS.md, "Session 17,
-- context"). Here the state is a row of its own, written at post time: a take updates it with
-- three small index entries (key, queue, held), an ack with one (the key: the partial indexes
-- drop the row), and context_entries is never updated after its post.
--
-- Rows are kept as long as their entry (the context purge and the namespace purge delete
-- both); an entry acknowledged before migration 9 keeps ack_time NULL and its receipt in
-- context_acks, as before.

CREATE TABLE coordd.context_any (
    namespace text NOT NULL,
    id bigint NOT NULL,
    -- Copied from the entry (never change): who may take and acknowledge it, and until when.
    to_role text NOT NULL,
    to_agent_id text NOT NULL,
    expire_time timestamptz NOT NULL,
    -- The delivery state: who holds it and until when; whether, by whom and when acknowledged.
    taker_agent_id text NOT NULL DEFAULT '',
    take_expire_time timestamptz,
    acked boolean NOT NULL DEFAULT false,
    ack_time timestamptz,
    PRIMARY KEY (namespace, id)
);

INSERT INTO coordd.context_any (namespace, id, to_role, to_agent_id, expire_time,
    taker_agent_id, take_expire_time, acked, ack_time)
SELECT namespace, id, to_role, to_agent_id, expire_time, taker_agent_id, take_expire_time,
    acked, ack_time
FROM coordd.context_entries WHERE delivery = 'any';

-- As migrations 7 and 8 had them on context_entries: `acked` among the columns so that a take's
-- (acked, id) order is one only the queue index gives (see 0008_context_open_queue.sql).
CREATE INDEX context_any_queue ON coordd.context_any (namespace, to_role, acked, id)
    WHERE NOT acked;
CREATE INDEX context_any_held ON coordd.context_any (namespace, taker_agent_id, acked, id)
    WHERE NOT acked;

DROP INDEX coordd.context_open_queue;
DROP INDEX coordd.context_held;
ALTER TABLE coordd.context_entries
    DROP COLUMN taker_agent_id,
    DROP COLUMN take_expire_time,
    DROP COLUMN acked,
    DROP COLUMN ack_time;
