-- coordd schema 12: ANY entries by role, for reads of everything a role was sent.
--
-- read_context's "ANY, all" branch (a reader that is not taking: SubscribeContext and
-- ReadContext without unread_only) selects a role's ANY entries after an id. Since schema 10
-- moved their delivery state to context_any, no index on context_entries led by (namespace,
-- to_role) covered ANY entries, and the function's generic plan walked context_expire_time:
-- every unexpired entry of every namespace, per read (20,008 rows filtered to return none, 2 ms
-- per read at 20,000 queued entries; with ten subscribers each post cost ten such reads:
-- bench context's delivery p50 rose from 8-14 to 30 ms). This index is written once per post
-- (the entry row is never updated) and read by that branch alone.
CREATE INDEX context_any_to_role ON coordd.context_entries (namespace, to_role, id)
    WHERE delivery = 'any';
