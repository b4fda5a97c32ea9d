-- coordd schema 7: open ANY entries by taker, so a take finds the entries its taker already
-- holds without scanning the role's whole queue (read_context's "caller's takes" branch).

CREATE INDEX context_held ON coordd.context_entries (namespace, taker_agent_id, id)
    WHERE delivery = 'any' AND NOT acked;
