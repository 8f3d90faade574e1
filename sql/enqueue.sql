-- Putting events into the outbox. emit() (fan-out), enqueue() (one endpoint)
-- and backfill() (NDJSON) are Rust (src/api/events.rs, src/api/backfill.rs):
-- each event is checked there and written by one statement in the caller's
-- transaction: an event exists iff that transaction commits. enqueue() and
-- backfill() write deliveries (sql/queries/insert_event.sql); emit() writes
-- the intake (sql/queries/insert_intake.sql), which the next claim turns into
-- deliveries (_route_intake, below). Here: where an event goes, the
-- functions' comments, and the wake-up at commit.

-- Where an event goes, in one place: to the endpoint named (enabled or not:
-- the caller chose it), or, with none named, to every enabled endpoint
-- subscribed to its type; with the attempts its rows get (the override, else
-- the endpoint's, else the setting). Plain SQL, so that it is inlined into
-- the inserts (sql/queries/insert_event.sql, insert_intake.sql, _route_intake) and backfill's count
-- (sql/queries/backfill_chunk.sql); the first branch reads the primary key,
-- the second runs only when no endpoint is named.
CREATE FUNCTION _routes(named_endpoint bigint, event_type text, attempts_override integer)
RETURNS TABLE (endpoint_id bigint, max_attempts integer)
LANGUAGE sql STABLE
AS $$
    SELECT t.id, coalesce(attempts_override, t.max_attempts, webhook_outbox._setting('max_attempts')::integer)
    FROM (
        SELECT e.id, e.max_attempts
        FROM webhook_outbox.endpoints e
        WHERE e.id OPERATOR(pg_catalog.=) named_endpoint
        UNION ALL
        SELECT e.id, e.max_attempts
        FROM webhook_outbox.endpoints e
        WHERE named_endpoint IS NULL
          AND e.enabled
          AND (e.event_types IS NULL OR event_type OPERATOR(pg_catalog.=) ANY (e.event_types))
    ) t
$$;
COMMENT ON FUNCTION _routes(bigint, text, integer) IS
'Internal: the endpoints an event goes to (the one named, else every enabled endpoint subscribed to its type) and their max_attempts.';

-- The intake's events into deliveries: up to max_events of the oldest, each
-- for every endpoint emit() routed it to that still exists, with the status
-- and the time emit() gave it (so it is due, and ordered, from then). The
-- same (endpoint, event_id) twice is one delivery, as with enqueue().
-- Events another claim is moving are skipped. Run by _claim before it
-- claims (so every worker, run_once() and get_ready_deliveries() see emit()'s
-- events), and by the worker while the mode is not on (so that shadow events
-- are recorded). Returns the events moved.
CREATE FUNCTION _route_intake(max_events integer) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, webhook_outbox, pg_temp
-- As in _claim: the queue's statistics are always stale, and a seq scan of
-- the intake reads every row that was moved out since the last vacuum; the
-- estimates also make the plan look worth compiling; planned once per session.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    moved integer;
BEGIN
    WITH taken AS (
        -- The ids as an array: one index scan, never a join over the intake.
        DELETE FROM intake i
        WHERE i.id = ANY (ARRAY(SELECT x.id FROM intake x ORDER BY x.id LIMIT max_events FOR UPDATE SKIP LOCKED))
        RETURNING i.*
    ), created AS (
        INSERT INTO deliveries AS d
            (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts, flag_key,
             created_at, next_attempt_at)
        SELECT r.endpoint_id, t.event_id, t.event_type, t.payload, t.subject_id, t.status, r.max_attempts,
               t.flag_key, t.created_at, t.created_at
        FROM taken t
        CROSS JOIN LATERAL unnest(t.endpoint_ids) WITH ORDINALITY AS e(id, n)
        CROSS JOIN LATERAL _routes(e.id, t.event_type, NULL) r
        ORDER BY t.id, e.n
        ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING
    )
    SELECT count(*) INTO moved FROM taken;
    RETURN moved;
END
$$;
COMMENT ON FUNCTION _route_intake(integer) IS
'Internal: move up to max_events events from the intake into deliveries, one per endpoint they were routed to; returns the events moved.';

COMMENT ON FUNCTION enqueue(bigint, text, jsonb, text, text) IS
'Queue one event for one endpoint in the current transaction; returns the delivery id. '
'A repeated (endpoint_id, event_id) creates nothing and returns the existing id. mode=off: returns NULL; mode=shadow: recorded, never sent.';

COMMENT ON FUNCTION emit(text, jsonb, text, text, text) IS
'Queue an event for every enabled endpoint subscribed to event_type, in the current transaction; returns how many endpoints it goes to. '
'One event_id (generated when NULL) for all endpoints; an endpoint that already has the event_id gets no second delivery. '
'Written to the intake, which the next claim turns into deliveries (v_queue_status counts it as pending at once). Safe to call from a trigger. '
'With a flag, nothing is queued unless should_emit_event(flag, subject_id) (a NULL subject passes only at 100%); '
'the rows record the flag in flag_key, counted by v_rollout_status.';

-- Wake the worker when a transaction that queued (or requeued) deliveries
-- commits: _wake_trigger (Rust, src/worker/wake.rs) registers the wake-up
-- once per transaction; it fires once per statement that writes deliveries.
CREATE TRIGGER deliveries_wake_worker
AFTER INSERT OR UPDATE OF status ON deliveries
FOR EACH STATEMENT EXECUTE FUNCTION _wake_trigger();
