-- Putting events into the outbox: enqueue (one endpoint) and emit (fan-out).
-- Both write in the caller's transaction, so an event exists iff it commits.

CREATE FUNCTION _check_event(event_type text, payload jsonb, event_id text, subject_id text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    size bigint;
    max_size bigint := _setting('max_payload_bytes')::bigint;
BEGIN
    IF event_type IS NULL OR btrim(event_type) = '' THEN
        RAISE EXCEPTION 'event_type must not be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the event, e.g. ''order.paid''.';
    END IF;
    -- event_id becomes the webhook-id header; all three are checked here, by
    -- the rule backfill() applies too, never later by the worker.
    PERFORM _check_event_key('event_type', event_type);
    PERFORM _check_event_key('event_id', event_id);
    PERFORM _check_event_key('subject_id', subject_id);
    IF payload IS NULL THEN
        RAISE EXCEPTION 'payload must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Send ''{}''::jsonb for an event without data.';
    END IF;
    size := octet_length(payload::text);
    IF size > max_size THEN
        RAISE EXCEPTION 'payload of % bytes exceeds webhook_outbox.max_payload_bytes (%)', size, max_size
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Send a reference to the document instead, or raise webhook_outbox.max_payload_bytes.';
    END IF;
END
$$;

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
#variable_conflict use_column
DECLARE
    mode text := _setting('mode');
    key text := coalesce(enqueue.event_id, gen_random_uuid()::text);
    id bigint;
BEGIN
    IF enqueue.endpoint_id IS NULL THEN
        RAISE EXCEPTION 'endpoint_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM _check_event(enqueue.event_type, enqueue.payload, enqueue.event_id, enqueue.subject_id);
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    INSERT INTO deliveries AS d (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts)
    SELECT e.id, key, enqueue.event_type, enqueue.payload, enqueue.subject_id,
           CASE mode WHEN 'shadow' THEN 'shadow' ELSE 'pending' END,
           coalesce(e.max_attempts, _setting('max_attempts')::integer)
    FROM endpoints e
    WHERE e.id = enqueue.endpoint_id
    ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING
    RETURNING d.id INTO id;
    IF id IS NULL THEN
        SELECT d.id INTO id FROM deliveries d WHERE d.endpoint_id = enqueue.endpoint_id AND d.event_id = key;
    END IF;
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
#variable_conflict use_column
DECLARE
    mode text := _setting('mode');
    key text := coalesce(emit.event_id, gen_random_uuid()::text);
    created integer;
BEGIN
    PERFORM _check_event(emit.event_type, emit.payload, emit.event_id, emit.subject_id);
    IF mode = 'off' THEN
        RETURN 0;
    END IF;
    -- A NULL subject has no bucket: it passes only a flag at 100% (src/rollout/bucket.rs).
    IF emit.flag IS NOT NULL AND NOT should_emit_event(emit.flag, emit.subject_id) THEN
        RETURN 0;
    END IF;
    INSERT INTO deliveries (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts, flag_key)
    SELECT e.id, key, emit.event_type, emit.payload, emit.subject_id,
           CASE mode WHEN 'shadow' THEN 'shadow' ELSE 'pending' END,
           coalesce(e.max_attempts, _setting('max_attempts')::integer),
           emit.flag
    FROM endpoints e
    WHERE e.enabled AND (e.event_types IS NULL OR emit.event_type = ANY (e.event_types))
    ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING;
    GET DIAGNOSTICS created = ROW_COUNT;
    RETURN created;
END
$$;
COMMENT ON FUNCTION emit(text, jsonb, text, text, text) IS
'Queue an event for every enabled endpoint subscribed to event_type, in the current transaction; returns rows created. '
'One event_id (generated when NULL) for all endpoints. Safe to call from a trigger. '
'With a flag, nothing is queued unless should_emit_event(flag, subject_id) (a NULL subject passes only at 100%); '
'the rows record the flag in flag_key, counted by v_rollout_status.';

-- Wake the worker when a transaction that queued (or requeued) deliveries commits.
CREATE FUNCTION _wake_trigger() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    PERFORM _wake_at_commit();
    RETURN NULL;
END
$$;
CREATE TRIGGER deliveries_wake_worker
AFTER INSERT OR UPDATE OF status ON deliveries
FOR EACH STATEMENT EXECUTE FUNCTION _wake_trigger();
