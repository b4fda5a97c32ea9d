-- coordd schema 9: an ANY entry's one receipt is kept on its row.
--
-- An ANY entry is acknowledged once, by the agent that holds it (or by anyone of its role once
-- nobody does), and only an agent of its role can: ANY entries are addressed to a role. So its
-- receipt is (taker_agent_id, to_role, ack_time), written by the UPDATE that acknowledges it
-- anyway, which spares a context_acks row, its index entry and its foreign-key check per
-- entry. Entries acknowledged before this migration have ack_time NULL and keep their
-- context_acks row, which is read as before.

ALTER TABLE coordd.context_entries ADD COLUMN ack_time timestamptz;
