-- Claim up to $1 deliveries with a lease of $2 milliseconds, leaving out the
-- endpoints in $3; with what the request needs. $4: the default rate limit.
SELECT d.id, d.endpoint_id, d.event_id, d.payload::pg_catalog.text, d.attempt_count, d.max_attempts,
       e.url, e.secret, e.headers::pg_catalog.text, coalesce(e.rate_limit_rps, $4), d.lease_token
FROM webhook_outbox._claim($1, $2::pg_catalog.float8 OPERATOR(pg_catalog.*) interval '1 millisecond', $3) d
JOIN webhook_outbox.endpoints e ON e.id OPERATOR(pg_catalog.=) d.endpoint_id
