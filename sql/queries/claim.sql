-- Claim up to $1 deliveries with a lease of $2 milliseconds, leaving out the
-- endpoints in $3; with what the request needs (the secrets of a rotation
-- still in their overlap last, newest first). $4: the default rate limit.
-- Each delivery's endpoint is read by its primary key (OFFSET 0 keeps the
-- planner from turning that into a hash of every endpoint, which with
-- thousands of endpoints costs more than the claim).
SELECT d.id, d.endpoint_id, d.event_id, d.payload::pg_catalog.text, d.attempt_count, d.max_attempts,
       e.url, e.secret, e.headers::pg_catalog.text, coalesce(e.rate_limit_rps, $4), d.lease_token,
       e.retired
FROM webhook_outbox._claim($1, $2::pg_catalog.float8 OPERATOR(pg_catalog.*) interval '1 millisecond', $3) d
CROSS JOIN LATERAL (
    SELECT x.url, x.secret, x.headers, x.rate_limit_rps, CASE WHEN x.retired_secrets IS NOT NULL
                THEN ARRAY(SELECT r.secret FROM webhook_outbox._retired_secrets(x) r) END AS retired
    FROM webhook_outbox.endpoints x
    WHERE x.id OPERATOR(pg_catalog.=) d.endpoint_id
    OFFSET 0
) e
