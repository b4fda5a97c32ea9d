-- coordd schema 13: a take is a HOT update; what an agent may hold is counted per agent.
--
-- A take sets an ANY entry's taker and lease. context_any_held had the taker among its columns,
-- so every take wrote a new row version with an entry in each of the table's three indexes:
-- index insertion was about 30 % of a backend's CPU in a batched take-and-ack (bench/RESULTS.md,
-- "Session 18, context"). Without that index a take changes no indexed column, and with room
-- left on each page (fillfactor) PostgreSQL writes the new version beside the old one and no
-- index entry at all (a heap-only tuple).
--
-- That index answered one question: which entries does the taker still hold from earlier takes
-- (a take answers with those first). context_takers answers "maybe some" per (namespace,
-- agent): how many entries it took and has not acknowledged since, and until when the latest
-- of those takes' leases runs. A take adds, the holder's acknowledgement subtracts, and once
-- lease_until has passed the agent holds nothing whatever the count says. The count is an upper
-- bound (an entry whose lease lapsed and that another agent then acknowledged is still counted
-- until the agent's last lease ends), so it is only ever used to skip a lookup when it is zero;
-- otherwise the lookup walks the role's open queue for the agent's entries.

CREATE TABLE coordd.context_takers (
    namespace text NOT NULL,
    agent_id text NOT NULL,
    held bigint NOT NULL,
    lease_until timestamptz NOT NULL,
    PRIMARY KEY (namespace, agent_id)
);

INSERT INTO coordd.context_takers (namespace, agent_id, held, lease_until)
SELECT namespace, taker_agent_id, count(*), max(take_expire_time)
FROM coordd.context_any
WHERE NOT acked AND taker_agent_id <> '' AND take_expire_time IS NOT NULL
GROUP BY namespace, taker_agent_id;

DROP INDEX coordd.context_any_held;
-- Room on each new page for a new version of every row on it: one take may update a whole
-- page, and each new version is longer than the old by the taker's id and the lease (a
-- 45-character id: 94 % of a take's updates were heap-only at fillfactor 40, all at 30). The
-- table's rows are narrow (about 100 bytes), so this costs about 330 bytes per ANY entry.
ALTER TABLE coordd.context_any SET (fillfactor = 30);
