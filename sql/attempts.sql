-- Attempts: results reported from outside (record_attempt() for an external
-- worker, update_webhook_health() for health alone) and run_once(), one
-- delivery pass in the calling session. All three are Rust around the settle
-- (src/settle), the code the background worker settles through.

COMMENT ON FUNCTION record_attempt(bigint, uuid, integer, integer, text, interval, text) IS
'Report the result of one HTTP attempt for a delivery claimed with get_ready_deliveries(), with the lease_token of that claim; returns the new status. '
'A token that is no longer the delivery''s (its lease ran out and it was claimed again) is refused and changes nothing. '
'2xx: sent. NULL status (network error), 408, 429, 5xx: retry after the backoff step (or retry_after, capped), dead when attempts are exhausted. '
'Other statuses: dead. failure_class says why it failed, as the worker records it (timeout, dns, connect, tls, connection, ...); '
'without it, http_status, redirect, or connection for a NULL status. Writes attempts and health_metrics. '
'The same rules the background worker applies.';

CREATE FUNCTION update_webhook_health(webhook_id bigint, status_code integer, response_time_ms integer, error text DEFAULT NULL)
RETURNS health_metrics
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT _update_webhook_health(webhook_id, status_code, response_time_ms, error);
    SELECT * FROM health_metrics WHERE health_metrics.webhook_id = update_webhook_health.webhook_id;
$$;
COMMENT ON FUNCTION update_webhook_health(bigint, integer, integer, text) IS
'Fold one result into an endpoint''s health: counters, EWMA response time, consecutive failures, health status, circuit breaker '
'(opens after webhook_outbox.circuit_failure_threshold consecutive failures, half-opens after circuit_open_seconds, closes on success).';

COMMENT ON FUNCTION run_once(integer) IS
'Deliver up to max_rows due deliveries from this session, through the same code as the background worker, and wait for them; '
'returns the attempts settled. Works without shared_preload_libraries. Everything happens in the calling transaction.';
