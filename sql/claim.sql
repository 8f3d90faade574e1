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
-- Each admitted endpoint's rows are read from its own range of the due index
-- (endpoint_id, next_attempt_at), so the backlog of an endpoint that may not
-- be sent to now (open circuit, disabled, excluded) is never read: a dead
-- receiver with a million rows waiting costs the others nothing. The oldest
-- rows of all admitted endpoints go first.
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
AS $$
BEGIN
    -- PL/pgSQL rather than SQL: the plan is cached for the session, and the
    -- worker calls this for every batch.
    RETURN QUERY
    WITH gate AS (
        SELECT e.id AS endpoint_id, h.circuit_state <> 'closed' AS probing
        FROM endpoints e
        JOIN health_metrics h ON h.webhook_id = e.id
        WHERE e.enabled
          AND _setting('mode') = 'on'
          AND NOT e.id = ANY (_claim.exclude)
          AND _admits_from(h.circuit_state, h.circuit_opened_at, h.circuit_probe_until) <= now()
    ), quota AS (
        -- Each endpoint's share of the batch: one row for a probe; with one
        -- endpoint admitted, the whole batch; with several, its rows among the
        -- oldest max_rows of all of them, found by a look without locks at up
        -- to max_rows rows of each (evaluated only then).
        SELECT g.endpoint_id, g.probing,
               CASE WHEN g.probing THEN 1
                    WHEN (SELECT count(*) FROM gate) = 1 THEN _claim.max_rows
                    ELSE cardinality(array_positions(ARRAY(
                             SELECT c.endpoint_id
                             FROM gate o
                             CROSS JOIN LATERAL (
                                 SELECT o.endpoint_id, d.next_attempt_at AS at
                                 FROM _claimable d
                                 WHERE d.endpoint_id = o.endpoint_id
                                 ORDER BY d.next_attempt_at
                                 LIMIT CASE WHEN o.probing THEN 1 ELSE _claim.max_rows END
                             ) c
                             ORDER BY c.at
                             LIMIT _claim.max_rows), g.endpoint_id))
               END AS n
        FROM gate g
    ), chosen AS (
        -- The share, locked. Only now: rows left over are not locked for
        -- nothing, and a row another claim holds is skipped for the next one,
        -- so concurrent claims each get a full batch.
        SELECT c.id, q.endpoint_id, q.probing
        FROM quota q
        CROSS JOIN LATERAL (
            SELECT d.id
            FROM _claimable d
            WHERE d.endpoint_id = q.endpoint_id
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
-- endpoint's own range of the due index. The worker sleeps until then, so a
-- dead endpoint's backlog does not keep it awake. Rows under a live lease are
-- left out: their worker settles them, and a lease a dead worker left behind
-- is found by the claim within a poll interval.
-- PL/pgSQL, like _claim, so that the plan is kept for the session (a SQL
-- function with SET clauses is planned on every call, and the worker asks
-- after each claim that was not full).
CREATE FUNCTION _next_due() RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
SET enable_seqscan = off  -- as in _claim
SET enable_bitmapscan = off
SET jit = off
AS $$
BEGIN
    RETURN (
    SELECT min(greatest(n.at, _admits_from(h.circuit_state, h.circuit_opened_at, h.circuit_probe_until)))
    FROM endpoints e
    JOIN health_metrics h ON h.webhook_id = e.id
    CROSS JOIN LATERAL (
        SELECT w.next_attempt_at AS at
        FROM _waiting w
        WHERE w.endpoint_id = e.id
        ORDER BY w.next_attempt_at
        LIMIT 1
    ) n
    WHERE e.enabled);
END
$$;
COMMENT ON FUNCTION _next_due() IS
'Internal: when the worker''s next claim may find a delivery (NULL: nothing waits).';

CREATE FUNCTION get_ready_deliveries(batch_size integer DEFAULT 10, lease interval DEFAULT '30 seconds')
RETURNS SETOF deliveries
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
    RETURN QUERY SELECT * FROM _claim(batch_size, lease);
END
$$;
COMMENT ON FUNCTION get_ready_deliveries(integer, interval) IS
'Claim up to batch_size due deliveries (pending or retry, not under a live lease) for an external worker: '
'they are leased (locked_until; delivery_state() says sending) until the lease ends. Skips disabled endpoints and open circuits. Report each result with record_attempt().';
