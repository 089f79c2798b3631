-- A new tuple in one round trip: the reconcile's read of the tuple state calls this with
-- p_open = true only when it found neither a stored report nor a job. It then does what
-- `Store::request_scan` and `scan_job_claim` do for a job that does not exist yet: record the
-- requester's namespace as a waiter, create the queued job and try to claim it, all in the
-- caller's statement (so the claim's per-scanner advisory lock is held to its end, as before).
--
-- outcome  meaning
-- won      the job was created and the caller holds the claim: submit now
-- queued   the job was created and waits for a free slot (`ahead` entries go first)
-- exists   another requester created the job since the caller's read: nothing was changed;
--          the caller goes on as if it had read that job (request, claim)
CREATE OR REPLACE FUNCTION scan_job_open(
    p_open boolean, p_report_id uuid, p_registration uuid, p_digest text, p_mime_type text,
    p_namespace text, p_queue_secs float8, p_max bigint, p_holder text, p_claim_secs float8,
    p_lock_class integer)
RETURNS TABLE (outcome text, ahead bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT p_open THEN
        RETURN;
    END IF;
    INSERT INTO scan_job (report_id, registration_uuid, digest, mime_type, state, lease_expires_at)
    VALUES (p_report_id, p_registration, p_digest, p_mime_type, 'queued',
            now() + make_interval(secs => p_queue_secs))
    ON CONFLICT (report_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'exists'::text, 0::bigint;
        RETURN;
    END IF;
    -- The job row first, then the waiter: the order `request_scan` takes them in.
    INSERT INTO scan_job_waiter AS w (report_id, namespace, registration_uuid, lease_expires_at)
    VALUES (p_report_id, p_namespace, p_registration,
            now() + make_interval(secs => p_queue_secs))
    ON CONFLICT (report_id, namespace) DO UPDATE SET lease_expires_at = EXCLUDED.lease_expires_at;
    -- The job is ours and queued: the claim cannot answer 'missing' or 'taken'.
    RETURN QUERY SELECT c.outcome, c.ahead
      FROM scan_job_claim(p_report_id, p_registration, p_max, p_holder, p_claim_secs,
                          p_lock_class) AS c;
END
$$;
