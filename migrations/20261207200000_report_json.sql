-- Report bodies are stored as `json` (the text the adapter sent, validated) instead of `jsonb`.
-- Nothing in the database reads inside a body: policy evaluation reads the `findings` column,
-- and the report API streams the body back as text. Building `jsonb` parsed every body into
-- its binary form on the write and rendered it back to text on every read; for the 13 KB
-- sample that was about a quarter of PostgreSQL's CPU for a new report (docs/benchmarks.md).
-- The change rewrites the table once, under an exclusive lock; the lz4 setting is set again
-- where the server has it, as the type change may reset it.
ALTER TABLE scan_report ALTER COLUMN report TYPE json USING report::json;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE scan_report ALTER COLUMN report SET COMPRESSION lz4;
    END IF;
END
$$;
