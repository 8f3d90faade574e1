-- A delivery.exhausted operational event for each of the deliveries $1 the
-- settle made dead, with the event and its last error.
INSERT INTO webhook_outbox.operational_events (event_type, endpoint_id, delivery_id, data)
SELECT 'delivery.exhausted', d.endpoint_id, d.id,
       pg_catalog.jsonb_build_object('event_id', d.event_id, 'event_type', d.event_type,
                                     'attempts', d.attempt_count, 'last_status_code', d.last_status_code,
                                     'last_error', d.last_error)
FROM webhook_outbox.deliveries d
WHERE d.id OPERATOR(pg_catalog.=) ANY ($1::bigint[])
ORDER BY d.id
