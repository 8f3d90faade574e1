-- The health rows of endpoints $1, in id order (no deadlock between two
-- settles); the caller appends the row lock it takes.
SELECT webhook_id, total_deliveries, successful_deliveries, failed_deliveries,
       consecutive_failures, avg_response_time_ms, last_status_code,
       webhook_outbox._epoch_ms(last_success_at),
       webhook_outbox._epoch_ms(last_failure_at),
       last_error, circuit_state,
       webhook_outbox._epoch_ms(circuit_opened_at),
       webhook_outbox._epoch_ms(failing_since)
FROM webhook_outbox.health_metrics
WHERE webhook_id OPERATOR(pg_catalog.=) ANY ($1)
ORDER BY webhook_id
