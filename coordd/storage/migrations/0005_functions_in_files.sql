-- coordd schema 5: SQL functions moved out of migrations into coordd/storage/sql/*.sql, which
-- every migrate applies with CREATE OR REPLACE. Databases migrated before the move keep the
-- functions they have (replaced in place); this drops the one nothing calls any more.

DROP FUNCTION IF EXISTS coordd.commit_rev(text, bigint, text, text, text, text, jsonb, timestamptz);
