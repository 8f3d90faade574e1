-- The settle's operational events about endpoints (failing, recovered,
-- circuit opened or closed: circuit::Health::notices): $1 types, $2
-- endpoints, $3 details. The trigger on the table publishes them.
INSERT INTO webhook_outbox.operational_events (event_type, endpoint_id, data)
SELECT * FROM unnest($1::pg_catalog.text[], $2::bigint[], $3::pg_catalog.jsonb[])
