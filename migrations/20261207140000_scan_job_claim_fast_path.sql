-- The claim without the fair-queue ranking when it cannot change the answer: when the live
-- claims and scans plus every other live queued job leave a slot free, this job is granted
-- whatever its rank. Counting both kinds takes one pass of the partial queue index, where the
-- ranking (a window over the queue, its waiters and turns) was run for every claim. Under
-- contention (no free slot for all) the decision is the fair-queue one, unchanged.
CREATE OR REPLACE FUNCTION scan_job_claim(
    p_report_id uuid, p_registration uuid, p_max bigint, p_holder text,
    p_claim_secs float8, p_lock_class integer)
RETURNS TABLE (outcome text, ahead bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_me scan_job%ROWTYPE;
    v_active bigint;
    v_ahead bigint;
    v_queued bigint;
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
    -- The live claims and scans, and the other live queued jobs, in one pass of the queue index.
    SELECT count(*) FILTER (WHERE state IN ('submitting', 'submitted')),
           count(*) FILTER (WHERE state = 'queued' AND report_id <> p_report_id)
      INTO v_active, v_queued
      FROM scan_job
     WHERE registration_uuid = p_registration AND state IN ('queued', 'submitting', 'submitted')
       AND lease_expires_at > now();
    -- Room for every queued job: whatever their order, this one is granted, so skip ranking.
    IF v_active + v_queued < p_max THEN
        v_ahead := 0;
    ELSE
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
    END IF;
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
