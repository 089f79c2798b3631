-- Opening a new tuple when the scanner has room for every queued job: the job is inserted
-- already claimed, instead of inserted as queued and then read back and updated by the claim.
-- Every change of a job is a non-HOT update (its state and `updated_at` are indexed), so this
-- saves the claim's re-read and one index-maintaining update per new report.
--
-- The scanner's queue lock is now taken before the insert, so the room counted is the room
-- the claim is granted. No statement holds a scan_job row of another transaction while it
-- waits for that lock: `request_scan` does not take it, and a claim takes it before it
-- touches its row, so the new order cannot deadlock. Without room the job is inserted queued
-- and the fair-queue claim decides, as before.
CREATE OR REPLACE FUNCTION scan_job_open(
    p_open boolean, p_report_id uuid, p_registration uuid, p_digest text, p_mime_type text,
    p_namespace text, p_queue_secs float8, p_max bigint, p_holder text, p_claim_secs float8,
    p_lock_class integer)
RETURNS TABLE (outcome text, ahead bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_busy bigint;
    v_room boolean;
BEGIN
    IF NOT p_open THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock_class, hashtext(p_registration::text));
    -- Live claims, scans and queued jobs: one pass of the partial queue index.
    SELECT count(*) INTO v_busy
      FROM scan_job
     WHERE registration_uuid = p_registration AND state IN ('queued', 'submitting', 'submitted')
       AND lease_expires_at > now();
    v_room := v_busy < p_max;
    -- With room, the job starts claimed (what the claim's update would write); else queued.
    INSERT INTO scan_job (report_id, registration_uuid, digest, mime_type, state, holder,
                          lease_expires_at, attempts)
    VALUES (p_report_id, p_registration, p_digest, p_mime_type,
            CASE WHEN v_room THEN 'submitting' ELSE 'queued' END,
            CASE WHEN v_room THEN p_holder END,
            now() + make_interval(secs => CASE WHEN v_room THEN p_claim_secs ELSE p_queue_secs END),
            CASE WHEN v_room THEN 1 ELSE 0 END)
    ON CONFLICT (report_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'exists'::text, 0::bigint;
        RETURN;
    END IF;
    INSERT INTO scan_job_waiter AS w (report_id, namespace, registration_uuid, lease_expires_at)
    VALUES (p_report_id, p_namespace, p_registration,
            now() + make_interval(secs => p_queue_secs))
    ON CONFLICT (report_id, namespace) DO UPDATE SET lease_expires_at = EXCLUDED.lease_expires_at;
    IF NOT v_room THEN
        RETURN QUERY SELECT c.outcome, c.ahead
          FROM scan_job_claim(p_report_id, p_registration, p_max, p_holder, p_claim_secs,
                              p_lock_class) AS c;
        RETURN;
    END IF;
    -- The slot is this namespace's turn, as a claim records it.
    INSERT INTO scan_queue_turn (registration_uuid, namespace, served_at)
    VALUES (p_registration, p_namespace, clock_timestamp())
    ON CONFLICT (registration_uuid, namespace) DO UPDATE SET served_at = EXCLUDED.served_at;
    RETURN QUERY SELECT 'won'::text, 0::bigint;
END
$$;
