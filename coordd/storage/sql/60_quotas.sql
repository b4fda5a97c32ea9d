-- Quotas (see migrations/0005_quotas.sql): usage kept per (namespace, kind) by row triggers on
-- the counted tables, checked when a row is added or grows. Memory history, acks and votes are
-- not counted: they follow from counted writes.

-- Bytes a row counts for, by table.
CREATE OR REPLACE FUNCTION coordd.quota_row_bytes(p_kind text, r record) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_kind = 'memory' THEN
        RETURN octet_length(r.value::text) + octet_length(r.text)
            + coalesce(octet_length(r.embedding), 0);
    ELSIF p_kind = 'context' THEN
        RETURN octet_length(r.content::text);
    END IF;
    RETURN coalesce(octet_length(r.result), 0);
END $$;

CREATE OR REPLACE FUNCTION coordd.quota_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k text := TG_ARGV[0];
    ns text;
    d_entries bigint := 0;
    d_bytes bigint := 0;
    u coordd.usage;
    q coordd.quotas;
BEGIN
    IF TG_OP = 'INSERT' THEN
        ns := NEW.namespace; d_entries := 1; d_bytes := coordd.quota_row_bytes(k, NEW);
    ELSIF TG_OP = 'DELETE' THEN
        ns := OLD.namespace; d_entries := -1; d_bytes := -coordd.quota_row_bytes(k, OLD);
    ELSE
        ns := NEW.namespace;
        d_bytes := coordd.quota_row_bytes(k, NEW) - coordd.quota_row_bytes(k, OLD);
    END IF;
    INSERT INTO coordd.usage AS x (namespace, kind, entries, bytes)
    VALUES (ns, k, greatest(d_entries, 0), greatest(d_bytes, 0))
    ON CONFLICT (namespace, kind) DO UPDATE
        SET entries = x.entries + d_entries, bytes = x.bytes + d_bytes
    RETURNING * INTO u;
    IF d_entries > 0 OR d_bytes > 0 THEN
        SELECT * INTO q FROM coordd.quotas WHERE namespace = ns AND kind = k;
        IF FOUND AND q.max_entries > 0 AND d_entries > 0 AND u.entries > q.max_entries THEN
            RAISE EXCEPTION USING ERRCODE = 'CD002',
                MESSAGE = format('%s %s_entries %s %s', ns, k, q.max_entries, u.entries - d_entries);
        END IF;
        IF FOUND AND q.max_bytes > 0 AND d_bytes > 0 AND u.bytes > q.max_bytes THEN
            RAISE EXCEPTION USING ERRCODE = 'CD002',
                MESSAGE = format('%s %s_bytes %s %s', ns, k, q.max_bytes, u.bytes - d_bytes);
        END IF;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS quota_memory ON coordd.memory;
CREATE TRIGGER quota_memory AFTER INSERT OR UPDATE OR DELETE ON coordd.memory
    FOR EACH ROW EXECUTE FUNCTION coordd.quota_track('memory');
DROP TRIGGER IF EXISTS quota_context ON coordd.context_entries;
CREATE TRIGGER quota_context AFTER INSERT OR DELETE ON coordd.context_entries
    FOR EACH ROW EXECUTE FUNCTION coordd.quota_track('context');
DROP TRIGGER IF EXISTS quota_idempotency ON coordd.idempotency;
CREATE TRIGGER quota_idempotency AFTER INSERT OR UPDATE OR DELETE ON coordd.idempotency
    FOR EACH ROW EXECUTE FUNCTION coordd.quota_track('idempotency');
