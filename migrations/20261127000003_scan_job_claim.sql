-- The claim decision of the single-flight protocol in one round trip. Under a per-scanner
-- advisory lock (held to the end of the caller's transaction), a job may be claimed when it is
-- queued or its claim or scan lease ran out, and the scanner has fewer than p_max live claims
-- and scans plus live queue entries ahead of it (first come, first served across replicas).
-- Each statement of a volatile function takes a fresh snapshot, so the counts see every
-- decision committed before the lock was granted.
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
    SELECT count(*) INTO v_ahead FROM scan_job q
     WHERE q.registration_uuid = p_registration AND q.report_id <> p_report_id
       AND q.state = 'queued' AND q.lease_expires_at > now()
       AND (q.enqueued_at, q.report_id) < (v_me.enqueued_at, v_me.report_id);
    IF v_active + v_ahead >= p_max THEN
        RETURN QUERY SELECT 'queued'::text, v_ahead;
        RETURN;
    END IF;
    UPDATE scan_job SET state = 'submitting', holder = p_holder, scan_id = NULL,
           lease_expires_at = now() + make_interval(secs => p_claim_secs),
           attempts = attempts + 1, updated_at = now()
     WHERE report_id = p_report_id;
    RETURN QUERY SELECT 'won'::text, 0::bigint;
END
$$;
