-- Fair queueing per scanner: free slots go round-robin across the namespaces that wait.
--
-- A job is shared by every requester of its tuple, so its namespaces live beside it: one
-- waiter row per (job, namespace), refreshed with the queue lease whenever a requester of that
-- namespace asks for the scan. A waiter whose lease ran out no longer counts. A queued job
-- without a live waiter (e.g. queued before this migration) waits as namespace ''.
CREATE TABLE IF NOT EXISTS scan_job_waiter (
    report_id         uuid        NOT NULL,
    namespace         text        NOT NULL,
    registration_uuid uuid        NOT NULL,
    lease_expires_at  timestamptz NOT NULL,
    PRIMARY KEY (report_id, namespace)
);

CREATE INDEX IF NOT EXISTS scan_job_waiter_expiry ON scan_job_waiter (lease_expires_at);

-- When a scanner last gave a slot to a job a namespace waited for: the round-robin cursor.
CREATE TABLE IF NOT EXISTS scan_queue_turn (
    registration_uuid uuid        NOT NULL,
    namespace         text        NOT NULL,
    served_at         timestamptz NOT NULL,
    PRIMARY KEY (registration_uuid, namespace)
);

-- The claim decision, as before under the per-scanner advisory lock, with a fair order of the
-- live queue instead of first come, first served. Each (job, namespace) pair gets its rank k
-- within its namespace (by enqueued_at); a job takes its best pair. Jobs are ordered by
--   (k, when that namespace was last served (never first), namespace, enqueued_at, report_id)
-- so every namespace's first job goes before any namespace's second, and among namespaces the
-- one served longest ago goes first: round-robin. A job may be claimed when the live claims and
-- scans plus the jobs ordered before it are fewer than p_max. Winning marks every namespace
-- that waited for the job as served now (clock_timestamp: decisions are serialised by the lock,
-- and a transaction's now() may predate a decision made while it waited for the lock).
CREATE OR REPLACE FUNCTION scan_job_claim(
    p_report_id uuid, p_registration uuid, p_max bigint, p_holder text,
    p_claim_secs float8, p_lock_class integer)
RETURNS TABLE (outcome text, ahead bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_me scan_job%ROWTYPE;
    v_active bigint;
    v_ahead bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_class, hashtext(p_registration::text));
    SELECT * INTO v_me FROM scan_job WHERE report_id = p_report_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, 0::bigint;
        RETURN;
    END IF;
    IF NOT (v_me.state = 'queued'
            OR (v_me.state IN ('submitting', 'submitted') AND v_me.lease_expires_at <= now())) THEN
        RETURN QUERY SELECT 'taken'::text, 0::bigint;
        RETURN;
    END IF;
    SELECT count(*) INTO v_active FROM scan_job
     WHERE registration_uuid = p_registration AND state IN ('submitting', 'submitted')
       AND lease_expires_at > now();
    WITH q AS (
        SELECT j.report_id, j.enqueued_at, coalesce(w.namespace, '') AS namespace
          FROM scan_job j
          LEFT JOIN scan_job_waiter w
            ON w.report_id = j.report_id AND w.lease_expires_at > now()
         WHERE j.registration_uuid = p_registration
           AND ((j.state = 'queued' AND j.lease_expires_at > now())
                OR j.report_id = p_report_id)
    ), ranked AS (
        SELECT q.report_id, q.enqueued_at, q.namespace,
               row_number() OVER (PARTITION BY q.namespace
                                  ORDER BY q.enqueued_at, q.report_id) AS k,
               coalesce(t.served_at, '-infinity'::timestamptz) AS served_at
          FROM q
          LEFT JOIN scan_queue_turn t
            ON t.registration_uuid = p_registration AND t.namespace = q.namespace
    ), keyed AS (
        SELECT DISTINCT ON (report_id) report_id, k, served_at, namespace, enqueued_at
          FROM ranked
         ORDER BY report_id, k, served_at, namespace
    )
    SELECT count(*) INTO v_ahead
      FROM keyed a JOIN keyed me ON me.report_id = p_report_id
     WHERE a.report_id <> p_report_id
       AND (a.k, a.served_at, a.namespace, a.enqueued_at, a.report_id)
         < (me.k, me.served_at, me.namespace, me.enqueued_at, me.report_id);
    IF v_active + v_ahead >= p_max THEN
        RETURN QUERY SELECT 'queued'::text, v_ahead;
        RETURN;
    END IF;
    UPDATE scan_job SET state = 'submitting', holder = p_holder, scan_id = NULL,
           lease_expires_at = now() + make_interval(secs => p_claim_secs),
           attempts = attempts + 1, updated_at = now()
     WHERE report_id = p_report_id;
    INSERT INTO scan_queue_turn (registration_uuid, namespace, served_at)
    SELECT p_registration, ns.namespace, clock_timestamp()
      FROM (SELECT w.namespace FROM scan_job_waiter w
             WHERE w.report_id = p_report_id AND w.lease_expires_at > now()
            UNION SELECT '' WHERE NOT EXISTS (
                SELECT 1 FROM scan_job_waiter w
                 WHERE w.report_id = p_report_id AND w.lease_expires_at > now())) AS ns
    ON CONFLICT (registration_uuid, namespace) DO UPDATE SET served_at = EXCLUDED.served_at;
    RETURN QUERY SELECT 'won'::text, 0::bigint;
END
$$;
