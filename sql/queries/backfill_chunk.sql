-- Look at a chunk of backfill events before they are written, one by one,
-- through the insert every event takes (sql/queries/insert_event.sql, from
-- src/api/events.rs). $1: the endpoint, NULL to fan out; $2..$4: the
-- events' ids, types and payloads (distinct ids); $5: max_attempts override;
-- $6: dry run. Returns, per event (1-based in the chunk): its payload as
-- stored (whose text the payload limit measures), how many endpoints it
-- goes to, and, in a dry run, how many of them have no delivery of it yet.
-- The counts are this statement's; the insert sees endpoints as they are
-- when it runs (no lock is taken on endpoints, which would deadlock with a
-- transaction that creates one and backfills).
WITH events AS (
    SELECT u.event_no::integer AS event_no, u.event_id, u.event_type, u.payload
    FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]),
                    pg_catalog.unnest($4::pg_catalog.text[]::pg_catalog.jsonb[]))
         WITH ORDINALITY AS u(event_id, event_type, payload, event_no)
)
SELECT e.event_no, e.payload,
       (SELECT pg_catalog.count(*) FROM webhook_outbox._routes($1::bigint, e.event_type, $5::integer)) AS routes,
       CASE WHEN $6::boolean THEN
           (SELECT pg_catalog.count(*)
            FROM webhook_outbox._routes($1::bigint, e.event_type, $5::integer) r
            WHERE NOT EXISTS (
                SELECT FROM webhook_outbox.deliveries x
                WHERE x.endpoint_id OPERATOR(pg_catalog.=) r.endpoint_id
                  AND x.event_id OPERATOR(pg_catalog.=) e.event_id))
       END AS new
FROM events e
ORDER BY e.event_no
