-- Report bodies and findings are compressed with lz4 instead of pglz where the server has it:
-- pglz_compress was the largest single function of PostgreSQL's CPU when reports of new tuples
-- were stored (docs/benchmarks.md). Existing rows keep their compression until rewritten; a
-- server built without lz4 keeps pglz.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE scan_report ALTER COLUMN report SET COMPRESSION lz4,
                                ALTER COLUMN findings SET COMPRESSION lz4;
    END IF;
END
$$;
