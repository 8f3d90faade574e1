-- Insert (or, $7, only count) a chunk of backfill events: those whose payload
-- fits (_payload_refusal, the rule enqueue() and emit() apply), through the
-- one insert path, _insert_events. $1: the endpoint, NULL to fan out;
-- $2..$5: the events (distinct ids); $6: max_attempts override. Returns, per
-- event (1-based in the chunk): how many endpoints it goes to, how many of
-- its deliveries are new, and why it was refused; and, on every row, the
-- deliveries the insert created (0 in a dry run). The counts are taken
-- under this statement's snapshot, the insert under its own: an endpoint
-- created, enabled or disabled in between, or the same event inserted by
-- another session, can make them differ from what the insert did (the
-- deliveries themselves are right; no lock is taken on endpoints, which
-- would deadlock with a transaction that creates one and backfills).
WITH events AS (
    SELECT u.event_no::integer AS event_no, u.event_id, u.event_type, u.payload, u.subject_id,
           webhook_outbox._payload_refusal(u.payload, false) AS refusal
    FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]),
                    pg_catalog.unnest($4::pg_catalog.text[]::pg_catalog.jsonb[]), pg_catalog.unnest($5::pg_catalog.text[]))
         WITH ORDINALITY AS u(event_id, event_type, payload, subject_id, event_no)
), routed AS (
    SELECT e.event_no, pg_catalog.count(*) AS routes,
           pg_catalog.count(*) FILTER (
               WHERE NOT EXISTS (
                   SELECT FROM webhook_outbox.deliveries x
                   WHERE x.endpoint_id OPERATOR(pg_catalog.=) r.endpoint_id
                     AND x.event_id OPERATOR(pg_catalog.=) e.event_id)) AS new
    FROM events e
    CROSS JOIN LATERAL webhook_outbox._routes($1::bigint, e.event_type, $6::integer) r
    WHERE e.refusal IS NULL
    GROUP BY e.event_no
), inserted AS (
    SELECT CASE WHEN $7::boolean THEN 0
                ELSE webhook_outbox._insert_events($1::bigint, a.ids, a.types, a.payloads, a.subjects,
                                                   NULL::pg_catalog.text, $6::integer)
           END AS created
    FROM (SELECT pg_catalog.array_agg(e.event_id ORDER BY e.event_no) AS ids,
                 pg_catalog.array_agg(e.event_type ORDER BY e.event_no) AS types,
                 pg_catalog.array_agg(e.payload ORDER BY e.event_no) AS payloads,
                 pg_catalog.array_agg(e.subject_id ORDER BY e.event_no) AS subjects
          FROM events e
          WHERE e.refusal IS NULL) a
)
SELECT e.event_no, coalesce(r.routes, 0), coalesce(r.new, 0), e.refusal, (SELECT i.created FROM inserted i)
FROM events e
LEFT JOIN routed r ON r.event_no OPERATOR(pg_catalog.=) e.event_no
ORDER BY e.event_no
