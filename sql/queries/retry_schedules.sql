-- The endpoints among $1 that have a retry schedule of their own, with it:
-- read by settle only for results that will be retried.
SELECT e.id, e.retry_schedule
FROM webhook_outbox.endpoints e
WHERE e.id OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.int8[]) AND e.retry_schedule IS NOT NULL
