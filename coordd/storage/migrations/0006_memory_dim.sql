-- coordd schema 6: the embedding dimensions present in a namespace, found by index.
--
-- Every memory write checks that its embedding has the namespace's dimension
-- (coordd.memory_apply). Without an index that check read every entry of the namespace: at
-- 100,000 entries about 0.2 s per write, so a batch of 100 held its namespace's lock for tens
-- of seconds. With it, the check is two index probes for "any other dimension".
CREATE INDEX memory_dim ON coordd.memory (namespace, dim) WHERE dim > 0;
