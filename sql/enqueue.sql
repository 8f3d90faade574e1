-- Putting events into the outbox. enqueue (one endpoint), emit (fan-out) and
-- backfill (NDJSON, src/api/backfill.rs) all write through _insert_events, in
-- the caller's transaction: an event exists iff that transaction commits.

-- The checks an event passes before it is routed, whatever the mode or the
-- rollout flag say; backfill applies the same key and payload rules line by
-- line (and reports a bad line instead of raising).
-- Qualified and without a SET clause: it runs for every event, and setting
-- search_path (on entry and again on exit) costs more than the checks.
CREATE FUNCTION _check_event(event_type text, payload jsonb, event_id text, subject_id text) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF event_type IS NULL OR pg_catalog.btrim(event_type) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'event_type must not be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the event, e.g. ''order.paid''.';
    END IF;
    -- event_id becomes the webhook-id header: checked here, never later by the worker.
    PERFORM webhook_outbox._check_event_key('event_type', event_type);
    PERFORM webhook_outbox._check_event_key('event_id', event_id);
    PERFORM webhook_outbox._check_event_key('subject_id', subject_id);
    IF payload IS NULL THEN
        RAISE EXCEPTION 'payload must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Send ''{}''::jsonb for an event without data.';
    END IF;
    PERFORM webhook_outbox._payload_refusal(payload, true);
END
$$;
COMMENT ON FUNCTION _check_event(text, jsonb, text, text) IS 'Internal: an event''s type, keys and payload as enqueue() and emit() check them.';

-- The payload limit, in one place: the size of the request body the worker
-- sends, which is the payload's text as jsonb prints it (not the text the
-- caller wrote: emit() never sees that). NULL when it fits; otherwise the
-- reason, or (raise) an ERROR. Qualified and without a SET clause: it runs
-- for every event.
CREATE FUNCTION _payload_refusal(payload jsonb, raise boolean) RETURNS text
LANGUAGE plpgsql STABLE STRICT
AS $$
DECLARE
    size bigint := pg_catalog.octet_length(payload::pg_catalog.text);
    max_size bigint := webhook_outbox._setting('max_payload_bytes')::bigint;
    reason pg_catalog.text;
BEGIN
    IF size OPERATOR(pg_catalog.<=) max_size THEN
        RETURN NULL;
    END IF;
    reason := pg_catalog.format('payload of %s bytes exceeds webhook_outbox.max_payload_bytes (%s)', size, max_size);
    IF NOT raise THEN
        RETURN reason;
    END IF;
    RAISE EXCEPTION '%', reason
        USING ERRCODE = 'program_limit_exceeded',
              HINT = 'Send a reference to the document instead, or raise webhook_outbox.max_payload_bytes.';
END
$$;
COMMENT ON FUNCTION _payload_refusal(jsonb, boolean) IS
'Internal: NULL if the payload fits webhook_outbox.max_payload_bytes (bytes of its jsonb text, the request body); else why not, or an ERROR when raise.';

-- Where an event goes, in one place: to the endpoint named (enabled or not:
-- the caller chose it), or, with none named, to every enabled endpoint
-- subscribed to its type; with the attempts its rows get (the override, else
-- the endpoint's, else the setting). Plain SQL, so that it is inlined into
-- _insert_events; the first branch reads the primary key, the second runs
-- only when no endpoint is named.
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

-- The one INSERT into the outbox, for events that passed their checks
-- (_check_event, or backfill's line check and _payload_refusal). Events are
-- given as parallel arrays: one element for enqueue and emit, a chunk for
-- backfill. Each goes where _routes() says, with the status
-- webhook_outbox.mode gives (shadow rows are recorded, never sent); an event
-- already in the outbox for an endpoint (same event_id) is left as it is.
-- Returns how many deliveries it created.
-- Qualified, so that it needs no search_path, and returning a count, not
-- rows: enqueue() and emit() call it for every event, and a result set
-- built, or a statement wrapped around the INSERT to collect its rows, costs
-- more than the INSERT. Its plan is made once per session (force_generic_plan):
-- PL/pgSQL would otherwise plan it again on every call, since a plan made for
-- one event looks cheaper than one for any number, and planning it (the
-- inlined routing) costs several times what running it does.
CREATE FUNCTION _insert_events(
    named_endpoint bigint,
    event_ids text[],
    event_types text[],
    payloads jsonb[],
    subject_ids text[],
    flag text,
    attempts_override integer
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    new_status pg_catalog.text := CASE WHEN webhook_outbox._setting('mode') OPERATOR(pg_catalog.=) 'shadow'
                                       THEN 'shadow' ELSE 'pending' END;
    created integer;
BEGIN
    INSERT INTO webhook_outbox.deliveries AS d
        (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts, flag_key)
    SELECT r.endpoint_id, u.event_id, u.event_type, u.payload, u.subject_id, new_status, r.max_attempts, flag
    FROM ROWS FROM (pg_catalog.unnest(event_ids), pg_catalog.unnest(event_types),
                    pg_catalog.unnest(payloads), pg_catalog.unnest(subject_ids))
         AS u(event_id, event_type, payload, subject_id)
    CROSS JOIN LATERAL webhook_outbox._routes(named_endpoint, u.event_type, attempts_override) r
    ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING;
    GET DIAGNOSTICS created = ROW_COUNT;
    RETURN created;
END
$$;
COMMENT ON FUNCTION _insert_events(bigint, text[], text[], jsonb[], text[], text, integer) IS
'Internal: the one insert into deliveries, for enqueue(), emit() and backfill(): routing (_routes), status by mode, max_attempts '
'and idempotency on (endpoint_id, event_id). Returns the deliveries created.';

CREATE FUNCTION enqueue(
    endpoint_id bigint,
    event_type text,
    payload jsonb,
    event_id text DEFAULT NULL,
    subject_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    key text := coalesce(enqueue.event_id, gen_random_uuid()::text);
    id bigint;
BEGIN
    IF enqueue.endpoint_id IS NULL THEN
        RAISE EXCEPTION 'endpoint_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM _check_event(enqueue.event_type, enqueue.payload, enqueue.event_id, enqueue.subject_id);
    IF _setting('mode') = 'off' THEN
        RETURN NULL;
    END IF;
    IF _insert_events(enqueue.endpoint_id, ARRAY[key], ARRAY[enqueue.event_type], ARRAY[enqueue.payload],
                      ARRAY[enqueue.subject_id], NULL, NULL) = 1 THEN
        -- The one row just created took the id sequence's latest value in this session.
        RETURN currval('deliveries_id_seq');
    END IF;
    -- Already queued with this event_id; none: no such endpoint.
    SELECT d.id INTO id FROM deliveries d WHERE d.endpoint_id = enqueue.endpoint_id AND d.event_id = key;
    IF id IS NULL THEN
        RAISE EXCEPTION 'endpoint % does not exist', enqueue.endpoint_id
            USING ERRCODE = 'undefined_object', HINT = 'Create it with webhook_outbox.create_endpoint(url).';
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION enqueue(bigint, text, jsonb, text, text) IS
'Queue one event for one endpoint in the current transaction; returns the delivery id. '
'A repeated (endpoint_id, event_id) creates nothing and returns the existing id. mode=off: returns NULL; mode=shadow: recorded, never sent.';

CREATE FUNCTION emit(
    event_type text,
    payload jsonb,
    event_id text DEFAULT NULL,
    subject_id text DEFAULT NULL,
    flag text DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    PERFORM _check_event(emit.event_type, emit.payload, emit.event_id, emit.subject_id);
    IF _setting('mode') = 'off' THEN
        RETURN 0;
    END IF;
    -- A NULL subject has no bucket: it passes only a flag at 100% (core/src/bucket.rs).
    IF emit.flag IS NOT NULL AND NOT should_emit_event(emit.flag, emit.subject_id) THEN
        RETURN 0;
    END IF;
    RETURN _insert_events(NULL, ARRAY[coalesce(emit.event_id, gen_random_uuid()::text)], ARRAY[emit.event_type],
                          ARRAY[emit.payload], ARRAY[emit.subject_id], emit.flag, NULL);
END
$$;
COMMENT ON FUNCTION emit(text, jsonb, text, text, text) IS
'Queue an event for every enabled endpoint subscribed to event_type, in the current transaction; returns rows created. '
'One event_id (generated when NULL) for all endpoints. Safe to call from a trigger. '
'With a flag, nothing is queued unless should_emit_event(flag, subject_id) (a NULL subject passes only at 100%); '
'the rows record the flag in flag_key, counted by v_rollout_status.';

-- Wake the worker when a transaction that queued (or requeued) deliveries commits.
-- Qualified and without a SET clause, like _check_event: it fires for every
-- statement that writes deliveries.
CREATE FUNCTION _wake_trigger() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM webhook_outbox._wake_at_commit();
    RETURN NULL;
END
$$;
CREATE TRIGGER deliveries_wake_worker
AFTER INSERT OR UPDATE OF status ON deliveries
FOR EACH STATEMENT EXECUTE FUNCTION _wake_trigger();
