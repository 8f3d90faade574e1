-- Give claimed deliveries back without counting an attempt: each becomes due
-- at its at_ms (Unix milliseconds), or now if that has passed. Only those
-- still held by the claim whose token is given (_held_by), as in settle.sql.
UPDATE webhook_outbox.deliveries d
SET attempt_count = d.attempt_count OPERATOR(pg_catalog.-) 1,
    locked_until = NULL,
    next_attempt_at = GREATEST(webhook_outbox._from_epoch_ms(r.at_ms), pg_catalog.now())
FROM unnest($1::bigint[], $2::pg_catalog.uuid[], $3::bigint[]) AS r(id, lease, at_ms)
WHERE d.id OPERATOR(pg_catalog.=) r.id
  AND webhook_outbox._held_by(d.locked_until, d.lease_token, r.lease)
