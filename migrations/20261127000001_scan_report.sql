-- Scan reports, one row per (digest, registration_uuid, mime_type).
-- `id` is derived from that tuple (UUIDv5, see README "Report identity"), so every writer
-- computes the same primary key and concurrent writers converge on one row.
CREATE TABLE IF NOT EXISTS scan_report (
    id                uuid        PRIMARY KEY,
    digest            text        NOT NULL,
    registration_uuid uuid        NOT NULL,
    mime_type         text        NOT NULL,
    report            jsonb       NOT NULL,
    -- Severity counts with Harbor 2.9's column names.
    critical_cnt      bigint      NOT NULL DEFAULT 0,
    high_cnt          bigint      NOT NULL DEFAULT 0,
    medium_cnt        bigint      NOT NULL DEFAULT 0,
    low_cnt           bigint      NOT NULL DEFAULT 0,
    unknown_cnt       bigint      NOT NULL DEFAULT 0,
    none_cnt          bigint      NOT NULL DEFAULT 0,
    fixable_cnt       bigint      NOT NULL DEFAULT 0,
    scanner_name      text        NOT NULL,
    scanner_vendor    text        NOT NULL,
    scanner_version   text        NOT NULL,
    generated_at      timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT scan_report_digest_registration_uuid_mime_type_key
        UNIQUE (digest, registration_uuid, mime_type),
    CONSTRAINT scan_report_counts_non_negative CHECK (
        critical_cnt >= 0 AND high_cnt >= 0 AND medium_cnt >= 0 AND low_cnt >= 0
        AND unknown_cnt >= 0 AND none_cnt >= 0 AND fixable_cnt >= 0)
);

-- The unique constraint's index already serves look-ups by digest (its leading column).
