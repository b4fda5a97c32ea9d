-- coordd schema 11: the sender index is led by the sender, so that only the primary key serves
-- a lookup by (namespace, id).
--
-- context_from_agent was (namespace, from_agent_id, id). Planning a lookup by namespace and
-- id while the table is small and never analyzed (a fresh queue), PostgreSQL may take that
-- index with `id` as a filter on its third column: it walks every entry of the namespace, per
-- id. read_context/ack_context plan generically once per connection and keep the plan, so a
-- connection that started on a small queue paid that walk on every probe as the queue grew
-- (PostgreSQL 400-1,300 us per entry instead of about 60 in a batched drain that followed an
-- unbatched run: bench/RESULTS.md, "Session 17, context"). Led by the sender, the index still
-- serves what it is for (what one agent posted in a namespace, in id order) and no longer
-- competes with the primary key.

DROP INDEX coordd.context_from_agent;
CREATE INDEX context_from_agent ON coordd.context_entries (from_agent_id, namespace, id);
