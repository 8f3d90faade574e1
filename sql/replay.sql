-- Dead-letter replay: moving dead (or shadow, or sent) deliveries back to
-- pending, with an audit log.

CREATE TABLE replay_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    replayed_at  timestamptz NOT NULL DEFAULT now(),
    replayed_by  text NOT NULL DEFAULT session_user,
    filters      jsonb NOT NULL,
    requeued     bigint NOT NULL,
    delivery_ids bigint[] NOT NULL
);
COMMENT ON TABLE replay_log IS
'Audit trail of replay_dead_letters() and requeue_dead(): who (session_user), when, with which filters, and which deliveries went back to pending. Dry runs change nothing and are not logged.';

CREATE FUNCTION replay_dead_letters(
    endpoint_id bigint DEFAULT NULL,
    event_type text DEFAULT NULL,
    since timestamptz DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    status text DEFAULT 'dead',
    max_rows integer DEFAULT 1000,
    dry_run boolean DEFAULT false
) RETURNS TABLE (replay_id bigint, requeued bigint, delivery_ids bigint[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    -- The window applies to the time the row reached its status, the column
    -- cleanup() ages it by: dead_at, sent_at, or created_at for shadow.
    age_column text := _age_column(replay_dead_letters.status);
BEGIN
    IF age_column IS NULL THEN
        RAISE EXCEPTION 'cannot replay deliveries with status %', coalesce(quote_literal(replay_dead_letters.status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Replay dead (the default), shadow or sent deliveries; pending, retry and sending ones are still the worker''s.';
    END IF;
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1, got %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF since >= until THEN
        RAISE EXCEPTION 'since (%) must be earlier than until (%)', since, until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dry_run IS NULL THEN
        RAISE EXCEPTION 'dry_run must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- Oldest first. A real run locks what it picks and skips rows another
    -- session holds; a dry run only reads.
    EXECUTE format($q$
        SELECT coalesce(array_agg(id ORDER BY at, id), '{}')
        FROM (
            SELECT d.id, d.%1$I AS at
            FROM webhook_outbox.deliveries d
            WHERE d.status = $1
              AND ($2::bigint IS NULL OR d.endpoint_id = $2)
              AND ($3::text IS NULL OR d.event_type = $3)
              AND d.%1$I >= coalesce($4, '-infinity') AND d.%1$I < coalesce($5, 'infinity')
              -- A deleted endpoint's rows would wait for ever.
              AND NOT EXISTS (SELECT FROM webhook_outbox.endpoints e
                              WHERE e.id = d.endpoint_id AND e.deleted_at IS NOT NULL)
            ORDER BY d.%1$I, d.id
            LIMIT $6
            %2$s
        ) picked$q$, age_column, CASE WHEN dry_run THEN '' ELSE 'FOR UPDATE SKIP LOCKED' END)
        INTO delivery_ids
        USING replay_dead_letters.status, replay_dead_letters.endpoint_id, replay_dead_letters.event_type,
              since, until, max_rows;
    requeued := cardinality(delivery_ids);
    IF dry_run THEN
        RETURN NEXT;
        RETURN;
    END IF;

    -- Payload and event_id stay as they were: receivers dedupe on webhook-id.
    UPDATE deliveries d
    SET status = 'pending', attempt_count = 0, next_attempt_at = now(), locked_until = NULL,
        last_status_code = NULL, last_error = NULL, sent_at = NULL, dead_at = NULL
    WHERE d.id = ANY (replay_dead_letters.delivery_ids);

    INSERT INTO replay_log (filters, requeued, delivery_ids)
    VALUES (jsonb_build_object('endpoint_id', replay_dead_letters.endpoint_id,
                               'event_type', replay_dead_letters.event_type,
                               'since', since,
                               'until', until,
                               'status', replay_dead_letters.status,
                               'max_rows', max_rows),
            replay_dead_letters.requeued, replay_dead_letters.delivery_ids)
    RETURNING replay_log.id INTO replay_id;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION replay_dead_letters(bigint, text, timestamptz, timestamptz, text, integer, boolean) IS
'Move up to max_rows deliveries back to pending, oldest first, with attempts and errors reset; payload and event_id are never changed. '
'Filters: endpoint_id, event_type, status (dead by default; shadow and sent can be replayed too) and a window [since, until) on the time '
'the row reached that status (dead_at, created_at for shadow, sent_at). Every replay is logged in replay_log; returns its id, the count '
'and the delivery ids. dry_run returns what would be requeued (replay_id NULL) and changes nothing. Deleted endpoints'' rows are never replayed.';

CREATE FUNCTION requeue_dead(max_rows integer DEFAULT 100, endpoint_id bigint DEFAULT NULL, dry_run boolean DEFAULT false)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT requeued
    FROM replay_dead_letters(endpoint_id => requeue_dead.endpoint_id, max_rows => requeue_dead.max_rows,
                             dry_run => requeue_dead.dry_run)
$$;
COMMENT ON FUNCTION requeue_dead(integer, bigint, boolean) IS
'Move up to max_rows dead deliveries (oldest first, optionally of one endpoint) back to pending with attempts and errors reset; '
'payload and event_id are kept; returns the count. Shorthand for replay_dead_letters(), and logged in replay_log like it. dry_run counts without changing anything.';

