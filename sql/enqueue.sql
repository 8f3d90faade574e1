-- Putting events into the outbox. emit() (fan-out), enqueue() (one endpoint)
-- and backfill() (NDJSON) are Rust (src/api/events.rs, src/api/backfill.rs):
-- each event is checked there and written by one statement
-- (sql/queries/insert_event.sql), in the caller's transaction: an event
-- exists iff that transaction commits. Here: where an event goes, the
-- functions' comments, and the wake-up at commit.

-- Where an event goes, in one place: to the endpoint named (enabled or not:
-- the caller chose it), or, with none named, to every enabled endpoint
-- subscribed to its type; with the attempts its rows get (the override, else
-- the endpoint's, else the setting). Plain SQL, so that it is inlined into
-- the insert (sql/queries/insert_event.sql) and backfill's count
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

COMMENT ON FUNCTION enqueue(bigint, text, jsonb, text, text) IS
'Queue one event for one endpoint in the current transaction; returns the delivery id. '
'A repeated (endpoint_id, event_id) creates nothing and returns the existing id. mode=off: returns NULL; mode=shadow: recorded, never sent.';

COMMENT ON FUNCTION emit(text, jsonb, text, text, text) IS
'Queue an event for every enabled endpoint subscribed to event_type, in the current transaction; returns rows created. '
'One event_id (generated when NULL) for all endpoints. Safe to call from a trigger. '
'With a flag, nothing is queued unless should_emit_event(flag, subject_id) (a NULL subject passes only at 100%); '
'the rows record the flag in flag_key, counted by v_rollout_status.';

-- Wake the worker when a transaction that queued (or requeued) deliveries
-- commits: _wake_trigger (Rust, src/worker/wake.rs) registers the wake-up
-- once per transaction; it fires once per statement that writes deliveries.
CREATE TRIGGER deliveries_wake_worker
AFTER INSERT OR UPDATE OF status ON deliveries
FOR EACH STATEMENT EXECUTE FUNCTION _wake_trigger();
