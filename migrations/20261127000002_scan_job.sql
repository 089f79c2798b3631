-- Single-flight scan jobs, one row per report id (the tuple). The row is the durable record that
-- exactly one scan of a tuple is in flight across reconcilers, ScanRequests and replicas, and the
-- per-scanner queue that enforces the Scanner's maxInFlight.
--
-- state      meaning                                     lease_expires_at means
-- queued     wanted, waiting for a slot                  requesters still want it (refreshed)
-- submitting claimed by `holder`, POST /scan under way   claim expiry: a crashed holder is replaced
-- submitted  the adapter has `scan_id`; anyone may poll  scan deadline: then the scan is presumed lost
-- done       the last scan completed at `completed_at`   -
-- failed     the adapter rejected the scan: `last_error` -
CREATE TABLE IF NOT EXISTS scan_job (
    report_id         uuid        PRIMARY KEY,
    registration_uuid uuid        NOT NULL,
    digest            text        NOT NULL,
    mime_type         text        NOT NULL,
    state             text        NOT NULL
        CHECK (state IN ('queued', 'submitting', 'submitted', 'done', 'failed')),
    scan_id           text,
    holder            text,
    lease_expires_at  timestamptz,
    next_poll_at      timestamptz,
    enqueued_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at      timestamptz,
    completed_at      timestamptz,
    attempts          integer     NOT NULL DEFAULT 0,
    last_error        text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'submitted' OR scan_id IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS scan_job_queue ON scan_job (registration_uuid, enqueued_at, report_id)
    WHERE state IN ('queued', 'submitting', 'submitted');
