-- coordd schema 8: the open ANY queue indexed so that takers cannot miss it.
--
-- context_open_queue replaces context_open_any with `acked` among its columns: a take orders by
-- (acked, id) (acked is false there, so that is id order), an order only this index gives, so
-- no plan walks the primary key through every acknowledged entry of the namespace. By id alone
-- the primary key looks as good to the planner whenever the statistics date from before the
-- queue drained, and each take then costs O(entries acknowledged so far). context_held gets the
-- same column for the same reason.

DROP INDEX coordd.context_open_any;
CREATE INDEX context_open_queue ON coordd.context_entries (namespace, to_role, acked, id)
    WHERE delivery = 'any' AND NOT acked;
DROP INDEX coordd.context_held;
CREATE INDEX context_held ON coordd.context_entries (namespace, taker_agent_id, acked, id)
    WHERE delivery = 'any' AND NOT acked;
