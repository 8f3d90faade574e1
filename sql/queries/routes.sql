-- Where emit() sends an event of type $1 (src/api/routes.rs caches it per
-- session): the ids of the enabled endpoints subscribed to it, per _routes().
SELECT pg_catalog.array_agg(r.endpoint_id ORDER BY r.endpoint_id)
FROM webhook_outbox._routes(NULL::pg_catalog.int8, $1::pg_catalog.text, NULL::pg_catalog.int4) r
