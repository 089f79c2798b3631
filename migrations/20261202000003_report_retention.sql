-- Report retention: when a ScanRequest last referenced each report. The leader refreshes it for
-- every report id in the ScanRequests' status, every read of the tuple by a reconcile refreshes
-- it too, and a sweep deletes reports not referenced for --report-retention, in small batches.
-- Existing reports count as referenced now: they get a full retention period.
ALTER TABLE scan_report
    ADD COLUMN IF NOT EXISTS last_referenced_at timestamptz NOT NULL DEFAULT now();

CREATE INDEX IF NOT EXISTS scan_report_last_referenced ON scan_report (last_referenced_at);

-- The job sweep finds finished jobs by age.
CREATE INDEX IF NOT EXISTS scan_job_finished ON scan_job (updated_at)
    WHERE state IN ('done', 'failed');
