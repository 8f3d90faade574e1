-- The outbox's life cycle in SQL: claim, cleanup, counts. Requeueing dead
-- deliveries is in operations.sql (replay_dead_letters, with its audit log).
-- Settling an attempt is Rust (src/settle.rs): it needs the retry rules of src/outcome.rs.

-- Time conversions for the statements in Rust (src/settle.rs, the worker).
-- Plain SQL without a SET clause, so that they are inlined: an inlined body
-- is parsed under the caller's search_path, so every function, operator and
-- type in them is qualified (type names that are SQL keywords, like bigint
-- and interval, always mean pg_catalog's). Any timestamp,
-- infinite ones included, converts without an error: a row a less careful
-- role wrote must not stop the worker's transactions.
CREATE FUNCTION _epoch_ms(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    -- Infinity compares like any other float8; 1e18 ms is 30 million years.
    SELECT pg_catalog.round(GREATEST(LEAST(pg_catalog.date_part('epoch', t) OPERATOR(pg_catalog.*) 1000::pg_catalog.float8,
                                           1e18::pg_catalog.float8), '-1e18'::pg_catalog.float8))::bigint
$$;
COMMENT ON FUNCTION _epoch_ms(timestamptz) IS 'Internal: Unix milliseconds of a timestamp, infinities clamped to +-1e18.';

CREATE FUNCTION _from_epoch_ms(ms bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    -- Clamped to the years 1970..9999: to_timestamp() raises an ERROR out of its range.
    SELECT pg_catalog.to_timestamp(GREATEST(LEAST(ms, 253402300799000::bigint), 0::bigint)::pg_catalog.float8
                                   OPERATOR(pg_catalog./) 1000::pg_catalog.float8)
$$;
COMMENT ON FUNCTION _from_epoch_ms(bigint) IS 'Internal: the timestamp of Unix milliseconds (clamped to 1970..9999).';

CREATE FUNCTION _after_ms(delay_ms bigint) RETURNS timestamptz
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT pg_catalog.now() OPERATOR(pg_catalog.+)
           (LEAST(delay_ms, 315360000000::bigint)::pg_catalog.float8 OPERATOR(pg_catalog.*) interval '1 millisecond')
$$;
COMMENT ON FUNCTION _after_ms(bigint) IS 'Internal: now() plus a delay in milliseconds (capped at ten years).';

-- Milliseconds from now until t, within 0 .. one day (NULL stays NULL: nothing waits).
CREATE FUNCTION _ms_until(t timestamptz) RETURNS bigint
LANGUAGE sql VOLATILE STRICT
AS $$
    SELECT pg_catalog.round(pg_catalog.date_part('epoch',
               GREATEST(LEAST(t, c OPERATOR(pg_catalog.+) interval '1 day'), c) OPERATOR(pg_catalog.-) c)
           OPERATOR(pg_catalog.*) 1000::pg_catalog.float8)::bigint
    FROM (SELECT pg_catalog.clock_timestamp() AS c) now
$$;
COMMENT ON FUNCTION _ms_until(timestamptz) IS 'Internal: how long the worker may sleep until t, 0 .. one day.';

-- What a claim may take now: due, and not under a lease (one that ran out
-- counts as none). Read one endpoint at a time, in next_attempt_at order,
-- from the due index; a claim locks rows through it (FOR UPDATE reaches the
-- table, and a row changed meanwhile is checked against these conditions again).
CREATE VIEW _claimable AS
SELECT d.*
FROM deliveries d
WHERE d.status IN ('pending', 'retry')
  AND d.next_attempt_at <= now()
  AND (d.locked_until IS NULL OR d.locked_until <= now());
COMMENT ON VIEW _claimable IS 'Internal: the deliveries a claim may take now (due, not leased).';

-- Claim due deliveries with a lease. Shared by get_ready_deliveries() and the
-- worker, which also passes the endpoints it already has enough in flight for.
-- Admission mirrors the circuit breaker (src/circuit.rs): closed endpoints
-- admit any number, an open one admits one probe once circuit_open_seconds
-- have passed (and is marked half_open), a half_open one admits another probe
-- only if the first one's lease ran out.
-- Each admitted endpoint's rows are read from its own range of the due index
-- (endpoint_id, next_attempt_at), so the backlog of an endpoint that may not
-- be sent to now (open circuit, disabled, excluded) is never read: a dead
-- receiver with a million rows waiting costs the others nothing. The oldest
-- rows of all admitted endpoints go first.
-- The lease is locked_until and its token alone (a HOT update: see deliveries in
-- schema.sql), so leased rows stay in the due index and each endpoint's scan
-- steps over those still held: at most the rows in flight. A lease that ran
-- out (its worker died) makes the row due again, in its old place.
CREATE FUNCTION _claim(p_limit integer, p_lease interval, p_exclude bigint[] DEFAULT '{}')
RETURNS SETOF deliveries
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, webhook_outbox, pg_temp
-- The one good plan walks each endpoint's range of the due index in order and
-- stops after p_limit rows; its cost must not grow with the backlog. The
-- planner has two other choices, both of which read every due row: a seq scan
-- and sort, which a cached generic plan prefers because it guesses LIMIT
-- p_limit to be a tenth of the table, and a bitmap scan and sort, which stale
-- statistics (always stale in a queue: a burst of inserts, a drained backlog)
-- make look cheap (50 ms for 500 rows out of 50,000). Both are switched off
-- here; planning every call instead would add a millisecond to each
-- delivery's latency. Those guesses also make the plan look costly enough
-- to compile with JIT, half a second per call.
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
          AND NOT e.id = ANY (p_exclude)
          AND (h.circuit_state = 'closed'
               OR (h.circuit_state = 'open'
                   AND h.circuit_opened_at + _setting('circuit_open_seconds')::interval <= now())
               OR (h.circuit_state = 'half_open' AND h.circuit_probe_at + p_lease <= now()))
    ), quota AS (
        -- Each endpoint's share of the batch: one row for a probe; with one
        -- endpoint admitted, the whole batch; with several, its rows among the
        -- oldest p_limit of all of them, found by a look without locks at up
        -- to p_limit rows of each (evaluated only then).
        SELECT g.endpoint_id, g.probing,
               CASE WHEN g.probing THEN 1
                    WHEN (SELECT count(*) FROM gate) = 1 THEN p_limit
                    ELSE cardinality(array_positions(ARRAY(
                             SELECT c.endpoint_id
                             FROM gate o
                             CROSS JOIN LATERAL (
                                 SELECT o.endpoint_id, d.next_attempt_at AS at
                                 FROM _claimable d
                                 WHERE d.endpoint_id = o.endpoint_id
                                 ORDER BY d.next_attempt_at
                                 LIMIT CASE WHEN o.probing THEN 1 ELSE p_limit END
                             ) c
                             ORDER BY c.at
                             LIMIT p_limit), g.endpoint_id))
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
        SET circuit_state = 'half_open', circuit_probe_at = now(), updated_at = now()
        FROM chosen c
        WHERE c.probing AND h.webhook_id = c.endpoint_id
    )
    -- By id through the primary key: a join would be planned from the
    -- generic plan's guess of chosen's size, which is no size at all.
    UPDATE deliveries d
    -- From the moment of the claim, not the transaction's start (run_once and
    -- external workers claim in transactions of their own making): the
    -- worker counts its requests' deadlines from before this statement.
    SET locked_until = clock_timestamp() + p_lease,
        lease_token = gen_random_uuid(),
        attempt_count = d.attempt_count + 1
    WHERE d.id = ANY (ARRAY(SELECT id FROM chosen))
    RETURNING d.*;
END
$$;
COMMENT ON FUNCTION _claim(integer, interval, bigint[]) IS 'Internal: the claim shared by get_ready_deliveries() and the worker.';

-- When _claim would next find something: each enabled endpoint's earliest due
-- row, not before its circuit admits a probe, read from the endpoint's own
-- range of the due index. The worker sleeps until then, so a dead endpoint's
-- backlog does not keep it awake. Leased rows are left out: their worker
-- settles them, and a lease a dead worker left behind is found by the claim
-- within a poll interval.
-- PL/pgSQL, like _claim, so that the plan is kept for the session: planned
-- on every call, as a SQL function with SET clauses is, it cost half a
-- millisecond, and the worker asks after each claim that was not full.
CREATE FUNCTION _next_due(p_lease interval) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
SET enable_seqscan = off  -- as in _claim
SET enable_bitmapscan = off
SET jit = off
AS $$
BEGIN
    RETURN (
    SELECT min(CASE h.circuit_state
                   WHEN 'closed' THEN n.at
                   WHEN 'open' THEN greatest(n.at, h.circuit_opened_at
                                             + _setting('circuit_open_seconds')::interval)
                   ELSE greatest(n.at, h.circuit_probe_at + p_lease)
               END)
    FROM endpoints e
    JOIN health_metrics h ON h.webhook_id = e.id
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at AS at
        FROM deliveries d
        WHERE d.endpoint_id = e.id
          AND d.status IN ('pending', 'retry')
          AND (d.locked_until IS NULL OR d.locked_until <= now())
        ORDER BY d.next_attempt_at
        LIMIT 1
    ) n
    WHERE e.enabled);
END
$$;
COMMENT ON FUNCTION _next_due(interval) IS
'Internal: when the worker''s next claim, with this lease, may find a delivery (NULL: nothing waits).';
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
'Claim up to batch_size due deliveries (pending or retry, not leased or with an expired lease) for an external worker: '
'they are leased (locked_until; delivery_state() says sending) until the lease ends. Skips disabled endpoints and open circuits. Report each result with record_attempt().';

-- Terminal statuses age by their own column, the key of their partial index.
CREATE FUNCTION _age_column(status text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT CASE status WHEN 'sent' THEN 'sent_at' WHEN 'shadow' THEN 'created_at' WHEN 'dead' THEN 'dead_at' END
$$;
COMMENT ON FUNCTION _age_column(text) IS 'Internal: the timestamp a sent, shadow or dead delivery ages by.';

-- Retention works through the ids of the rows to delete in windows of
-- batch_size: each statement is a short range scan of the primary key, and
-- each row is visited once. (Ordering by age instead would sort everything
-- still to delete in every batch: the history columns have BRIN indexes, which
-- give no order.) First the id range, from the age index:
CREATE FUNCTION _cleanup_range(status text, cutoff timestamptz, OUT first_id bigint, OUT last_id bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    EXECUTE format('SELECT min(id), max(id) FROM webhook_outbox.deliveries WHERE status = $1 AND %I < $2', _age_column(status))
        INTO first_id, last_id USING status, cutoff;
END
$$;
COMMENT ON FUNCTION _cleanup_range(text, timestamptz) IS
'Internal: the ids between which cleanup finds the deliveries of a status older than cutoff (NULLs: none).';

-- Then one window: the matching rows among ids [from_id, from_id + batch_size), with their attempts.
CREATE FUNCTION _cleanup_batch(status text, cutoff timestamptz, from_id bigint, batch_size integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    deleted bigint;
BEGIN
    EXECUTE format($q$
        WITH gone AS (
            DELETE FROM webhook_outbox.deliveries
            WHERE id >= $3 AND id < $3 + $4 AND status = $1 AND %I < $2
            RETURNING id
        ), gone_attempts AS (
            DELETE FROM webhook_outbox.attempts WHERE delivery_id IN (SELECT id FROM gone)
        )
        SELECT count(*) FROM gone$q$, _age_column(status))
        INTO deleted USING status, cutoff, from_id, batch_size;
    RETURN deleted;
END
$$;
COMMENT ON FUNCTION _cleanup_batch(text, timestamptz, bigint, integer) IS
'Internal: one retention statement for cleanup() and cleanup_in_batches(); returns the rows deleted.';

CREATE FUNCTION cleanup(
    sent_older_than interval DEFAULT '14 days',
    shadow_older_than interval DEFAULT '7 days',
    dead_older_than interval DEFAULT '30 days',
    dry_run boolean DEFAULT false
) RETURNS TABLE (status text, deleted bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    batch_size constant integer := 10000;
    cutoff timestamptz;
    from_id bigint;
    last_id bigint;
BEGIN
    IF sent_older_than IS NULL OR shadow_older_than IS NULL OR dead_older_than IS NULL THEN
        RAISE EXCEPTION 'cleanup needs an age for each status'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use a very long interval to keep a status, e.g. ''100 years''.';
    END IF;
    FOR status, cutoff IN VALUES ('sent', now() - sent_older_than),
                                 ('shadow', now() - shadow_older_than),
                                 ('dead', now() - dead_older_than)
    LOOP
        IF dry_run THEN
            EXECUTE format('SELECT count(*) FROM webhook_outbox.deliveries WHERE status = $1 AND %I < $2', _age_column(status))
                INTO deleted USING status, cutoff;
        ELSE
            -- Bounded statements: no single one collects a million row versions
            -- or ids. The transaction is still the caller's; cleanup_in_batches()
            -- commits between them.
            deleted := 0;
            SELECT r.first_id, r.last_id INTO from_id, last_id FROM _cleanup_range(status, cutoff) r;
            WHILE from_id <= last_id LOOP
                deleted := deleted + _cleanup_batch(status, cutoff, from_id, batch_size);
                from_id := from_id + batch_size;
            END LOOP;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION cleanup(interval, interval, interval, boolean) IS
'Delete sent, shadow and dead deliveries (and their attempts) older than the given ages, at most 10,000 rows per statement, '
'in the current transaction; returns the count per status. dry_run only counts. '
'For millions of rows prefer CALL cleanup_in_batches(), which commits between batches.';

CREATE FUNCTION count_pending_by_status()
RETURNS TABLE (status text, count bigint, oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT delivery_state(d.status, d.locked_until), count(*), min(d.created_at)
    FROM deliveries d
    WHERE d.status IN ('pending', 'retry', 'shadow')
    GROUP BY 1
    ORDER BY 1
$$;
COMMENT ON FUNCTION count_pending_by_status() IS 'Unfinished deliveries per status (pending, retry, sending, shadow), with the creation time of the oldest.';
