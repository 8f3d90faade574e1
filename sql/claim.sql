-- Claiming due deliveries with a lease, for the worker, run_once() and
-- external workers (get_ready_deliveries), and telling the worker when the
-- next one is due.

-- Waiting to be sent: pending or retry, and not under a live lease
-- (_leased). _claimable and _next_due() read it, each endpoint's rows in
-- next_attempt_at order from the due index; a claim locks rows through it
-- (FOR UPDATE reaches the table, and a row changed meanwhile is checked
-- against these conditions again).
CREATE VIEW _waiting AS
SELECT d.*
FROM deliveries d
WHERE d.status IN ('pending', 'retry')
  AND NOT coalesce(_leased(d.locked_until), false);
COMMENT ON VIEW _waiting IS 'Internal: pending and retry deliveries not under a live lease.';

-- What a claim may take now: waiting, and due.
CREATE VIEW _claimable AS
SELECT w.*
FROM _waiting w
WHERE w.next_attempt_at <= now();
COMMENT ON VIEW _claimable IS 'Internal: the deliveries a claim may take now (due, not under a live lease).';

-- When an endpoint's circuit breaker next lets a request through, in one
-- place for the claim and for the worker's sleep (_next_due). The states are
-- those of core/src/circuit.rs: closed admits at once; open admits one probe
-- once circuit_open_seconds have passed since it opened (the claim then marks
-- it half_open); half_open admits another probe only when the first one's
-- lease has ended without a result. A state without its time (a row written
-- by hand) admits at once, so that a probe's result repairs it.
-- Plain SQL, qualified, so that it is inlined into both.
CREATE FUNCTION _admits_from(circuit_state text, opened_at timestamptz, probe_until timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN circuit_state OPERATOR(pg_catalog.=) 'closed'::pg_catalog.text THEN '-infinity'::pg_catalog.timestamptz
               WHEN circuit_state OPERATOR(pg_catalog.=) 'open'::pg_catalog.text
                   THEN coalesce(opened_at OPERATOR(pg_catalog.+) webhook_outbox._setting('circuit_open_seconds')::interval,
                                 '-infinity'::pg_catalog.timestamptz)
               ELSE coalesce(probe_until, '-infinity'::pg_catalog.timestamptz)
           END
$$;
COMMENT ON FUNCTION _admits_from(text, timestamptz, timestamptz) IS
'Internal: from when an endpoint''s circuit admits a request: closed at once, open after circuit_open_seconds, half_open when its probe''s lease ends '
'(at once when that time is missing).';

-- Claim due deliveries with a lease. Shared by get_ready_deliveries() and the
-- worker, which also passes the endpoints it already has enough in flight for.
-- Admission is _admits_from(): closed endpoints admit any number of rows, an
-- endpoint whose circuit admits a probe exactly one (and is marked half_open
-- until that lease ends).
-- The claim never reads the list of endpoints, nor any endpoint's backlog it
-- may not send to: it walks the endpoints that have rows waiting (a loose
-- scan of the due index: one descent to the next endpoint id with pending or
-- retry rows), from a random place, wrapping around, counting the rows due of
-- those it may send to (up to an eighth of max_rows each, one for a probe),
-- and stops once it has counted max_rows rows or found max_rows such
-- endpoints, or when it is back where it began. Thousands of endpoints with
-- nothing waiting, and the million rows of a dead receiver, cost it nothing
-- (a dead receiver's endpoint costs one step); the random start spreads the
-- claims over all the endpoints when more than max_rows have rows due. Among the endpoints found,
-- each gets an equal share of the batch (one row for a probe); what the
-- shares leave goes to the other rows, in turns across the endpoints, oldest
-- first. With few endpoints: the oldest rows of all of them, but none starved
-- by another's backlog. Within an endpoint's share, fresh (pending) and
-- retried rows take turns, the older head first, each read from its own
-- range of the due index (endpoint_id, status, next_attempt_at): a share of
-- one is the oldest row, a larger one leaves room for both.
-- The lease is locked_until and its token alone (a HOT update: see deliveries in
-- schema.sql), so leased rows stay in the due index and each endpoint's scan
-- steps over those still held: at most the rows in flight. A lease that ran
-- out (its worker died) makes the row due again, in its old place.
CREATE FUNCTION _claim(max_rows integer, lease interval, exclude bigint[] DEFAULT '{}')
RETURNS SETOF deliveries
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, webhook_outbox, pg_temp
-- The one good plan walks each endpoint's range of the due index in order and
-- stops after max_rows rows; its cost must not grow with the backlog. The
-- planner has two other choices, both of which read every due row: a seq scan
-- and sort, which a cached generic plan prefers because it guesses LIMIT
-- max_rows to be a tenth of the table, and a bitmap scan and sort, which stale
-- statistics (always stale in a queue: a burst of inserts, a drained backlog)
-- make look cheap. Both are switched off here; planning every call instead
-- would add to each delivery's latency. Those guesses also make the plan look
-- costly enough to compile with JIT, which costs far more than the claim.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
-- Planned once per session: a plan made for each call's arguments looks a
-- little cheaper, so PostgreSQL would keep making one, and making it costs
-- more than running it.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    few integer := ceil(max_rows / 8.0);
BEGIN
    -- PL/pgSQL rather than SQL: the plan is cached for the session, and the
    -- worker calls this for every batch. One statement: each one more is a
    -- few dozen microseconds on every delivery's way out at low load.
    RETURN QUERY
    WITH RECURSIVE ends AS (
        -- The first endpoint with rows waiting, and where the walk starts: a
        -- random endpoint id between it and the last one with rows waiting.
        SELECT f.first, f.first + floor(random() * (l.last - f.first + 1))::bigint AS start
        FROM (SELECT (SELECT d.endpoint_id FROM deliveries d
                      WHERE d.status IN ('pending', 'retry')
                      ORDER BY d.endpoint_id LIMIT 1) AS first) f,
             (SELECT (SELECT d.endpoint_id FROM deliveries d
                      WHERE d.status IN ('pending', 'retry')
                      ORDER BY d.endpoint_id DESC LIMIT 1) AS last) l
        WHERE f.first IS NOT NULL AND _setting('mode') = 'on'
    ), walk (endpoint_id, wrapped, found, due, probing, mixed, status, rows) AS (
        -- Not an endpoint (nothing due): where the first step starts from.
        SELECT ends.start - 1, false, 0, 0::bigint, false, false, NULL::text, 0::bigint FROM ends
        UNION ALL
        SELECT n.id, n.wrapped, w.found + (a.due > 0)::integer, a.due, a.probing, a.mixed, a.status, w.rows + a.due
        FROM walk w
        CROSS JOIN ends
        CROSS JOIN LATERAL (
            -- The next endpoint with rows waiting; after the last, the first
            -- (once: the ends were read a moment earlier, and the rows at or
            -- above the start may have gone since).
            SELECT coalesce(x.id, ends.first) AS id, w.wrapped OR x.id IS NULL AS wrapped,
                   w.wrapped AND x.id IS NULL AS again
            FROM (SELECT (SELECT d.endpoint_id FROM deliveries d
                          WHERE d.status IN ('pending', 'retry') AND d.endpoint_id > w.endpoint_id
                          ORDER BY d.endpoint_id LIMIT 1) AS id
                  -- Computed once per step: pulled up into the step, each
                  -- use of the id would run the index descent again.
                  OFFSET 0) x
            OFFSET 0
        ) n
        CROSS JOIN LATERAL (
            -- How many of its rows count towards the batch: those due, up
            -- to an eighth of the batch (so that a batch is shared by at
            -- least eight endpoints when they exist), one for a probe, none
            -- unless it is enabled, not excluded and admitted by its circuit
            -- (looked at only when it has a row due); whether the row taken
            -- is a probe of its circuit; and whether both fresh and retried
            -- rows are due (else which of them).
            SELECT coalesce(g.due, 0) AS due, coalesce(g.probing, false) AS probing,
                   c.mixed, c.status
            FROM (SELECT least(count(*), few) AS n, coalesce(min(r.status) <> max(r.status), false) AS mixed,
                         min(r.status) AS status
                  FROM (VALUES ('pending'::text), ('retry'::text)) k (status)
                  CROSS JOIN LATERAL (SELECT c.status FROM _claimable c
                                      WHERE c.endpoint_id = n.id AND c.status = k.status LIMIT few) r
                  OFFSET 0) c
            LEFT JOIN LATERAL (
                SELECT CASE WHEN h.circuit_state = 'closed' THEN c.n ELSE 1 END AS due,
                       h.circuit_state <> 'closed' AS probing
                FROM endpoints e
                JOIN health_metrics h ON h.webhook_id = e.id
                WHERE c.n > 0
                  AND e.id = n.id
                  AND e.enabled
                  AND NOT e.id = ANY (_claim.exclude)
                  AND _admits_from(h.circuit_state, h.circuit_opened_at, h.circuit_probe_until) <= now()
            ) g ON true
            OFFSET 0
        ) a
        -- Enough rows found, or enough endpoints for a share of one each.
        WHERE w.rows < _claim.max_rows
          AND w.found < _claim.max_rows
          -- Once around: back at (or past) where the walk began.
          AND NOT (n.wrapped AND n.id >= ends.start)
          AND NOT n.again
    ), gate AS (
        SELECT DISTINCT w.endpoint_id, w.probing, w.mixed, w.status
        FROM walk w
        WHERE w.due > 0
    ), share AS (
        -- An equal share for each; with one endpoint, the whole batch.
        SELECT count(*) AS endpoints, greatest(1, ceil(_claim.max_rows::numeric / greatest(count(*), 1)))::integer AS n
        FROM gate
    ), picked AS (
        -- By a look without locks: first the rows within each endpoint's
        -- share, then, to fill the batch, the rest, each endpoint's next in
        -- turn, oldest first. Within an endpoint, fresh (pending) and
        -- retried rows take turns, the older of the two first: a storm of
        -- retries leaves room for new events, and new events leave room for
        -- the retries (a share of one is the oldest row). Each endpoint's
        -- rows of each kind are read up to max_rows when at most 8 share the
        -- batch, else up to the eighth of it the walk counted (so this reads
        -- at most 16 x max_rows rows). Not needed with one endpoint whose due
        -- rows are of one kind: it takes up to max_rows of them.
        -- The rows are numbered only once read: numbered in the scan, rows
        -- due at the same moment (a bulk insert's) would all be read before
        -- the first was counted.
        SELECT r.endpoint_id, r.status
        FROM (
            SELECT t.endpoint_id, t.probing, t.status, t.at,
                   row_number() OVER (PARTITION BY t.endpoint_id ORDER BY t.turn, t.at) AS place
            FROM (
                SELECT g.endpoint_id, g.probing, c.status, c.at,
                       row_number() OVER (PARTITION BY g.endpoint_id, c.status ORDER BY c.at) AS turn
                FROM gate g
                CROSS JOIN share s
                CROSS JOIN (VALUES ('pending'::text), ('retry'::text)) k (status)
                CROSS JOIN LATERAL (
                    SELECT d.status, d.next_attempt_at AS at
                    FROM _claimable d
                    WHERE d.endpoint_id = g.endpoint_id AND d.status = k.status AND (s.endpoints > 1 OR g.mixed)
                    ORDER BY d.next_attempt_at
                    LIMIT CASE WHEN g.probing THEN 1 WHEN s.endpoints <= 8 THEN _claim.max_rows ELSE few END
                ) c
            ) t
        ) r
        CROSS JOIN share s
        -- A probe is one row: its endpoint's first.
        WHERE r.place = 1 OR NOT r.probing
        -- Shares can add up to more than the batch (three endpoints, ten
        -- rows): the cut goes in turns too, so that no endpoint falls below
        -- another's share and no kind of row is cut first.
        ORDER BY r.place > s.n, r.place, r.at
        LIMIT _claim.max_rows
    ), quota AS (
        -- How many rows of each kind each endpoint gets: as picked, or with
        -- one endpoint of one kind, the batch (one row for a probe).
        SELECT g.endpoint_id, g.probing, g.status, CASE WHEN g.probing THEN 1 ELSE _claim.max_rows END AS n
        FROM gate g
        CROSS JOIN share s
        WHERE s.endpoints = 1 AND NOT g.mixed
        UNION ALL
        SELECT p.endpoint_id, g.probing, p.status, count(*)::integer
        FROM picked p
        JOIN gate g ON g.endpoint_id = p.endpoint_id
        GROUP BY p.endpoint_id, g.probing, p.status
    ), chosen AS (
        -- The quotas, locked. Only now: rows left over are not locked for
        -- nothing, and a row another claim holds is skipped for the next one
        -- of its endpoint and kind, so concurrent claims each get a full
        -- batch (short of a kind another claim holds all of: the next claim
        -- sees that).
        SELECT c.id, q.endpoint_id, q.probing
        FROM quota q
        CROSS JOIN LATERAL (
            SELECT d.id
            FROM _claimable d
            WHERE d.endpoint_id = q.endpoint_id AND d.status = q.status
            ORDER BY d.next_attempt_at
            LIMIT q.n
            FOR UPDATE SKIP LOCKED
        ) c
    ), half_open AS (
        UPDATE health_metrics h
        SET circuit_state = 'half_open', circuit_probe_until = clock_timestamp() + _claim.lease, updated_at = now()
        FROM chosen c
        WHERE c.probing AND h.webhook_id = c.endpoint_id
    )
    -- By id through the primary key: a join would be planned from the
    -- generic plan's guess of chosen's size, which is no size at all.
    UPDATE deliveries d
    -- From the moment of the claim, not the transaction's start (run_once and
    -- external workers claim in transactions of their own making): the
    -- worker counts its requests' deadlines from before this statement.
    SET locked_until = clock_timestamp() + _claim.lease,
        lease_token = gen_random_uuid(),
        attempt_count = d.attempt_count + 1
    WHERE d.id = ANY (ARRAY(SELECT id FROM chosen))
    RETURNING d.*;
END
$$;
COMMENT ON FUNCTION _claim(integer, interval, bigint[]) IS 'Internal: the claim shared by get_ready_deliveries() and the worker.';

-- When _claim would next find something: each enabled endpoint's earliest due
-- row, not before its circuit admits a request (_admits_from), read from the
-- endpoint's own range of the due index. The endpoints are walked as the
-- claim walks them, from the first: those with nothing waiting cost
-- nothing, and a disabled or dead endpoint one step, whatever its backlog.
-- The worker sleeps until then, so a dead endpoint's backlog does not keep it
-- awake. Rows under a live lease are left out: their worker settles them, and
-- a lease a dead worker left behind is found by the claim within a poll
-- interval.
-- PL/pgSQL, like _claim, so that the plan is kept for the session (a SQL
-- function with SET clauses is planned on every call, and the worker asks
-- after each claim that was not full).
CREATE FUNCTION _next_due() RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
SET enable_seqscan = off  -- as in _claim
SET enable_bitmapscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN (
    WITH RECURSIVE walk (endpoint_id) AS (
        -- Not an endpoint: where the first step starts from.
        SELECT -1::bigint
        UNION ALL
        SELECT (SELECT d.endpoint_id FROM deliveries d
                WHERE d.status IN ('pending', 'retry') AND d.endpoint_id > w.endpoint_id
                ORDER BY d.endpoint_id LIMIT 1)
        FROM walk w
        WHERE w.endpoint_id IS NOT NULL
    )
    SELECT min(greatest(n.at, _admits_from(h.circuit_state, h.circuit_opened_at, h.circuit_probe_until)))
    FROM walk w
    JOIN endpoints e ON e.id = w.endpoint_id
    JOIN health_metrics h ON h.webhook_id = e.id
    CROSS JOIN LATERAL (
        -- Its earliest waiting row, fresh or retried (each kind has its own
        -- range of the due index).
        SELECT min(x.at) AS at
        FROM (VALUES ('pending'::text), ('retry'::text)) k (status)
        CROSS JOIN LATERAL (
            SELECT wt.next_attempt_at AS at
            FROM _waiting wt
            WHERE wt.endpoint_id = e.id AND wt.status = k.status
            ORDER BY wt.next_attempt_at
            LIMIT 1
        ) x
    ) n
    WHERE e.enabled AND n.at IS NOT NULL);
END
$$;
COMMENT ON FUNCTION _next_due() IS
'Internal: when the worker''s next claim may find a delivery (NULL: nothing waits).';

-- What an external worker needs to send one delivery, and nothing more: no
-- table rights, and no secret (the signature is made here).
CREATE TYPE ready_delivery AS (
    id              bigint,
    endpoint_id     bigint,
    event_id        text,
    event_type      text,
    payload         jsonb,
    status          text,
    attempt_count   integer,
    max_attempts    integer,
    locked_until    timestamptz,
    lease_token     uuid,
    url             text,
    headers         jsonb,
    body            text,
    webhook_headers jsonb
);
COMMENT ON TYPE ready_delivery IS
'A delivery claimed by get_ready_deliveries(): POST body to url with headers, webhook_headers and Content-Type: application/json, '
'then report the result with record_attempt(id, lease_token, ...).';
COMMENT ON COLUMN ready_delivery.body IS 'The request body, byte for byte (the signature covers exactly this text).';
COMMENT ON COLUMN ready_delivery.headers IS 'The endpoint''s extra headers, {"name": "value"}.';
COMMENT ON COLUMN ready_delivery.webhook_headers IS
'The Standard Webhooks headers, signed at the claim: {"webhook-id", "webhook-timestamp", "webhook-signature"}. '
'Receivers refuse a timestamp far from their clock (five minutes, commonly): send within the lease. '
'NULL when the endpoint''s stored secret is not a valid key: do not send; report the attempt failed.';
COMMENT ON COLUMN ready_delivery.lease_token IS 'Pass it to record_attempt(): only the holder of the latest claim may settle the delivery.';

CREATE FUNCTION get_ready_deliveries(batch_size integer DEFAULT 10, lease interval DEFAULT '30 seconds')
RETURNS SETOF ready_delivery
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    IF batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1, got %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, got %', lease
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the time a delivery stays reserved for you, e.g. ''30 seconds''.';
    END IF;
    -- emit()'s events first, unless a worker moves them (in transactions of
    -- its own: this caller's may stay open).
    IF NOT _worker_serves_here() THEN
        PERFORM _route_intake(batch_size);
    END IF;
    RETURN QUERY
    SELECT d.id, d.endpoint_id, d.event_id, d.event_type, d.payload, d.status, d.attempt_count, d.max_attempts,
           d.locked_until, d.lease_token, e.url, e.headers, b.body,
           _webhook_headers(d.event_id, b.body, e.secret, ARRAY(SELECT r.secret FROM _retired_secrets(e) r))
    FROM _claim(batch_size, lease) d
    JOIN endpoints e ON e.id = d.endpoint_id
    CROSS JOIN LATERAL (SELECT d.payload::text AS body) b;
END
$$;
COMMENT ON FUNCTION get_ready_deliveries(integer, interval) IS
'Claim up to batch_size due deliveries (pending or retry, not under a live lease) for an external worker: '
'they are leased (locked_until; delivery_state() says sending) until the lease ends. Skips disabled endpoints and open circuits. '
'Each row has all a request needs (url, headers, body and the signed webhook_headers): EXECUTE on this and record_attempt() is all '
'an external worker needs. Report each result with record_attempt().';
