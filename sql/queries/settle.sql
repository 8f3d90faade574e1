-- Write a batch of attempt results: each delivery's new status, and an
-- attempts row for each, for the deliveries still held by the claim whose
-- token the result carries (_held_by). Returns the deliveries written.
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::pg_catalog.text[], $3::int[], $4::pg_catalog.text[], $5::int[],
                         $6::bigint[], $7::pg_catalog.text[], $8::int[], $9::bigint[], $10::pg_catalog.uuid[],
                         $11::pg_catalog.text[], $12::pg_catalog.inet[])
        AS r(id, status, code, err, duration_ms, delay_ms, body, attempt_no, endpoint_id, lease, class, remote)
), upd AS (
    UPDATE webhook_outbox.deliveries d
    SET status = r.status,
        last_status_code = r.code,
        last_error = r.err,
        locked_until = NULL,
        next_attempt_at = CASE WHEN r.status OPERATOR(pg_catalog.=) 'retry'
                               THEN webhook_outbox._after_ms(r.delay_ms)
                               ELSE d.next_attempt_at END,
        sent_at = CASE WHEN r.status OPERATOR(pg_catalog.=) 'sent' THEN pg_catalog.now() END,
        dead_at = CASE WHEN r.status OPERATOR(pg_catalog.=) 'dead' THEN pg_catalog.now() END
    FROM r
    WHERE d.id OPERATOR(pg_catalog.=) r.id
      AND webhook_outbox._held_by(d.locked_until, d.lease_token, r.lease)
    RETURNING d.id, d.status
), log AS (
    INSERT INTO webhook_outbox.attempts
        (delivery_id, endpoint_id, attempt_no, duration_ms, status_code, error, response_body, failure_class,
         remote_addr)
    SELECT r.id, r.endpoint_id, r.attempt_no, r.duration_ms, r.code, r.err, r.body, r.class, r.remote
    FROM r JOIN upd ON upd.id OPERATOR(pg_catalog.=) r.id
)
SELECT id, status FROM upd
