-- Write back the health rows the settle folded its results into.
UPDATE webhook_outbox.health_metrics h
SET total_deliveries = u.total, successful_deliveries = u.ok, failed_deliveries = u.failed,
    consecutive_failures = u.consecutive, avg_response_time_ms = u.avg_ms,
    last_status_code = u.code,
    last_success_at = webhook_outbox._from_epoch_ms(u.success_at),
    last_failure_at = webhook_outbox._from_epoch_ms(u.failure_at),
    last_error = u.err, health_status = u.health, circuit_state = u.circuit,
    circuit_opened_at = webhook_outbox._from_epoch_ms(u.opened_at),
    failing_since = webhook_outbox._from_epoch_ms(u.failing_since),
    updated_at = pg_catalog.now()
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::pg_catalog.float8[],
            $7::int[], $8::bigint[], $9::bigint[], $10::pg_catalog.text[], $11::pg_catalog.text[], $12::pg_catalog.text[], $13::bigint[],
            $14::bigint[])
    AS u(id, total, ok, failed, consecutive, avg_ms, code, success_at, failure_at, err, health, circuit, opened_at,
         failing_since)
WHERE h.webhook_id OPERATOR(pg_catalog.=) u.id
