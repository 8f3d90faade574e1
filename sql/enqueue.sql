-- Putting events into the outbox. emit() (fan-out), enqueue() (one endpoint)
-- and backfill() (NDJSON) are Rust (src/api/events.rs, src/api/backfill.rs):
-- each event is checked there and written by one statement in the caller's
-- transaction: an event exists iff that transaction commits. enqueue() and
-- backfill() write deliveries (sql/queries/insert_event.sql); emit() writes
-- the intake (sql/queries/insert_intake.sql), which the worker turns into
-- deliveries (_route_intake, below). Here: where an event goes, the
-- functions' comments, and the wake-up at commit.

-- Where an event goes, in one place: to the endpoint named (enabled or not:
-- the caller chose it; never a deleted one), or, with none named, to every enabled endpoint
-- subscribed to its type; with the attempts its rows get (the override, else
-- the endpoint's, else one more than the steps of its retry schedule, else
-- the settings': _default_max_attempts()). Plain SQL, so that it is inlined into
-- the inserts (sql/queries/insert_event.sql, _move_intake), emit()'s routes (sql/queries/routes.sql) and backfill's count
-- (sql/queries/backfill_chunk.sql); the first branch reads the primary key,
-- the second runs only when no endpoint is named.
CREATE FUNCTION _routes(named_endpoint bigint, event_type text, attempts_override integer)
RETURNS TABLE (endpoint_id bigint, max_attempts integer)
LANGUAGE sql STABLE
AS $$
    SELECT t.id, coalesce(attempts_override, t.max_attempts,
                          pg_catalog.cardinality(t.retry_schedule) OPERATOR(pg_catalog.+) 1,
                          webhook_outbox._default_max_attempts())
    FROM (
        SELECT e.id, e.max_attempts, e.retry_schedule
        FROM webhook_outbox.endpoints e
        WHERE e.id OPERATOR(pg_catalog.=) named_endpoint
          AND e.deleted_at IS NULL
        UNION ALL
        SELECT e.id, e.max_attempts, e.retry_schedule
        FROM webhook_outbox.endpoints e
        WHERE named_endpoint IS NULL
          AND e.enabled
          AND (e.event_types IS NULL OR event_type OPERATOR(pg_catalog.=) ANY (e.event_types))
    ) t
$$;
COMMENT ON FUNCTION _routes(bigint, text, integer) IS
'Internal: the endpoints an event goes to (the one named, else every enabled endpoint subscribed to its type) and their max_attempts.';

-- The intake's events into deliveries: each for every endpoint emit() routed
-- it to that still exists (and existed then: ids are not reused after a
-- TRUNCATE ... RESTART IDENTITY), with the status and the time emit() gave it
-- (so it is due, and ordered, from then). The same (endpoint, event_id) twice
-- is one delivery, as with enqueue(): the first to reach deliveries wins.
-- Rows in (endpoint, event) order, so that two routers meeting the same
-- duplicates wait on each other in one order, never in a cycle. Returns the
-- events moved. Called by _route_intake() and delete_endpoint(), whose
-- settings (search_path) it runs under.
CREATE FUNCTION _move_intake(ids bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT
AS $$
DECLARE
    moved integer;
BEGIN
    WITH taken AS (
        -- The ids as an array: one index scan, never a join over the intake.
        DELETE FROM intake i WHERE i.id = ANY (ids)
        RETURNING i.*
    ), created AS (
        INSERT INTO deliveries AS d
            (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts, flag_key,
             created_at, next_attempt_at)
        SELECT r.endpoint_id, t.event_id, t.event_type, t.payload, t.subject_id, t.status, r.max_attempts,
               t.flag_key, t.created_at, t.created_at
        FROM taken t
        CROSS JOIN LATERAL unnest(t.endpoint_ids) AS e(id)
        CROSS JOIN LATERAL _routes(e.id, t.event_type, NULL) r
        -- Locked and checked again, as in sql/queries/insert_event.sql.
        WHERE EXISTS (SELECT FROM endpoints x
                      WHERE x.id = r.endpoint_id AND x.created_at <= t.created_at AND x.deleted_at IS NULL
                      FOR KEY SHARE)
        ORDER BY r.endpoint_id, t.event_id
        ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING
    )
    SELECT count(*) INTO moved FROM taken;
    RETURN moved;
END
$$;
COMMENT ON FUNCTION _move_intake(bigint[]) IS 'Internal: the intake events of these ids into deliveries (see _route_intake).';

-- Up to max_events of the intake's oldest events into deliveries, skipping
-- those another router is moving. Run by the worker in a transaction of its
-- own (src/worker/main_loop.rs), never inside a claim: an event can wait
-- here on another session (the same event_id being written, uncommitted, by
-- enqueue() or a long backfill(); its endpoint being deleted), and a claim
-- must never. Such an event stays in the intake for the next pass; the
-- others go on. Without a worker, run_once() and get_ready_deliveries() run it
-- in their caller's transaction. Returns the events moved.
CREATE FUNCTION _route_intake(max_events integer) RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, webhook_outbox, pg_temp
-- As in _claim: the queue's statistics are always stale, and a seq scan of
-- the intake reads every row that was moved out since the last vacuum; the
-- estimates also make the plan look worth compiling; planned once per session.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
SET lock_timeout = '100ms'
AS $$
DECLARE
    ids bigint[] := ARRAY(SELECT x.id FROM intake x ORDER BY x.id LIMIT max_events FOR UPDATE SKIP LOCKED);
    one bigint;
    moved integer := 0;
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN 0;
    END IF;
    BEGIN
        RETURN _move_intake(ids);
    EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
        -- One at a time: what still waits on another session stays.
        FOREACH one IN ARRAY ids LOOP
            BEGIN
                moved := moved + _move_intake(ARRAY[one]);
            EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
                NULL;
            END;
        END LOOP;
        RETURN moved;
    END;
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
'Written to the intake, which the worker turns into deliveries within milliseconds (v_queue_status counts it as pending at once). Safe to call from a trigger. '
'With a flag, nothing is queued unless should_emit_event(flag, subject_id) (a NULL subject passes only at 100%); '
'the rows record the flag in flag_key, counted by v_rollout_status.';

-- Wake the worker when a transaction that queued (or requeued) deliveries
-- commits: _wake_trigger (Rust, src/worker/wake.rs) registers the wake-up
-- once per transaction; it fires once per statement that writes deliveries.
CREATE TRIGGER deliveries_wake_worker
AFTER INSERT OR UPDATE OF status ON deliveries
FOR EACH STATEMENT EXECUTE FUNCTION _wake_trigger();
