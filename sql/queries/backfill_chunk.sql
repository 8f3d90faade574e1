-- Insert (or, $7, only count) a chunk of backfill events through the one
-- insert path, _insert_events. $1: the endpoint, NULL to fan out; $2..$5: the
-- events (distinct ids); $6: max_attempts override. Returns, per event
-- (1-based in the chunk): how many endpoints it goes to, how many of its
-- deliveries are new (a dry run: would be), and why it was refused (a
-- payload over the limit), by the same rules the insert applies.
WITH input AS (
    SELECT $2::pg_catalog.text[] AS ids, $3::pg_catalog.text[] AS types,
           $4::pg_catalog.text[]::pg_catalog.jsonb[] AS payloads, $5::pg_catalog.text[] AS subjects
), events AS (
    SELECT u.event_no::integer AS event_no, u.event_id, u.event_type,
           webhook_outbox._payload_refusal(u.payload, false) AS refusal
    FROM input,
         ROWS FROM (pg_catalog.unnest(input.ids), pg_catalog.unnest(input.types), pg_catalog.unnest(input.payloads))
         WITH ORDINALITY AS u(event_id, event_type, payload, event_no)
), routed AS (
    SELECT e.event_no, pg_catalog.count(*) AS routes,
           -- Only for a dry run: a real run asks the insert.
           pg_catalog.count(*) FILTER (
               WHERE $7::boolean AND NOT EXISTS (
                   SELECT FROM webhook_outbox.deliveries x
                   WHERE x.endpoint_id OPERATOR(pg_catalog.=) r.endpoint_id
                     AND x.event_id OPERATOR(pg_catalog.=) e.event_id)) AS would_create
    FROM events e
    CROSS JOIN LATERAL webhook_outbox._routes($1::bigint, e.event_type, $6::integer) r
    WHERE e.refusal IS NULL
    GROUP BY e.event_no
), created AS (
    SELECT i.event_id, pg_catalog.count(*) AS created
    FROM input,
         webhook_outbox._insert_events($1::bigint, input.ids, input.types, input.payloads, input.subjects,
                                       NULL::pg_catalog.text, $6::integer, false) i
    WHERE NOT $7::boolean
    GROUP BY i.event_id
)
SELECT e.event_no,
       coalesce(r.routes, 0),
       coalesce(CASE WHEN $7::boolean THEN r.would_create ELSE c.created END, 0),
       e.refusal
FROM events e
LEFT JOIN routed r ON r.event_no OPERATOR(pg_catalog.=) e.event_no
LEFT JOIN created c ON c.event_id OPERATOR(pg_catalog.=) e.event_id
ORDER BY e.event_no
