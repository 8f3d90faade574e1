-- Insert (or, $8, only count) a chunk of backfill events through the one
-- insert path. $1: the endpoint, NULL to fan out; $2..$5: the events; $6:
-- max_attempts override. Returns, per event (1-based in the chunk): how many
-- endpoints it was routed to, how many deliveries are new, and why it was
-- refused (payload too large).
SELECT i.event_no,
       pg_catalog.count(i.endpoint_id),
       pg_catalog.count(*) FILTER (WHERE i.created),
       pg_catalog.max(i.refusal)
FROM webhook_outbox._insert_events($1::bigint, $2::pg_catalog.text[], $3::pg_catalog.text[],
                                   $4::pg_catalog.text[]::pg_catalog.jsonb[], $5::pg_catalog.text[],
                                   NULL::pg_catalog.text, $6::integer, $7::boolean, false) i
GROUP BY i.event_no
ORDER BY i.event_no
