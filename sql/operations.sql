-- Operator tooling: the backfill report tables (backfill() itself is Rust,
-- src/api/backfill.rs), dead-letter replay with its audit log, and retention
-- that commits between batches.

CREATE TABLE backfill_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    run_by      text NOT NULL DEFAULT session_user,
    endpoint_id bigint,
    dry_run     boolean NOT NULL,
    mode        text NOT NULL,
    processed   bigint NOT NULL DEFAULT 0,
    created     bigint NOT NULL DEFAULT 0,
    enqueued    bigint NOT NULL DEFAULT 0,
    duplicates  bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE backfill_runs IS
'One row per backfill() call, dry runs included, with its counts. Written in the caller''s transaction: a run that is rolled back leaves nothing.';
COMMENT ON COLUMN backfill_runs.run_by IS 'session_user of the call (the login, not the extension owner).';
COMMENT ON COLUMN backfill_runs.endpoint_id IS 'The endpoint given to backfill(); NULL = fanned out to subscribed endpoints.';

CREATE TABLE backfill_errors (
    run_id     bigint NOT NULL REFERENCES backfill_runs (id) ON DELETE CASCADE,
    line_no    integer NOT NULL,
    reason     text NOT NULL,
    line       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, line_no)
);
COMMENT ON TABLE backfill_errors IS
'Lines backfill() could not accept: line number (1-based, blank lines included), reason, and the first 1 kB of the line. '
'Delete old runs from backfill_runs; their errors go with them.';

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
'and the delivery ids. dry_run returns what would be requeued (replay_id NULL) and changes nothing.';

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

-- Neither SECURITY DEFINER nor a SET clause: either would forbid COMMIT in a
-- procedure. It runs with the caller's rights and search_path (a superuser's,
-- in the runbook), so every function, operator and type in it is qualified
-- and exactly typed: nothing can resolve to an object in another schema. The
-- deleting is done by _cleanup_batch(), which is SECURITY DEFINER.
CREATE PROCEDURE cleanup_in_batches(
    sent_older_than interval DEFAULT '14 days',
    shadow_older_than interval DEFAULT '7 days',
    dead_older_than interval DEFAULT '30 days',
    batch_size integer DEFAULT 10000
)
LANGUAGE plpgsql
AS $$
DECLARE
    statuses constant pg_catalog.text[] := ARRAY['sent', 'shadow', 'dead'];
    -- Fixed at the start: now() moves on with every COMMIT.
    cutoffs constant pg_catalog.timestamptz[] := ARRAY[pg_catalog.now() OPERATOR(pg_catalog.-) sent_older_than,
                                            pg_catalog.now() OPERATOR(pg_catalog.-) shadow_older_than,
                                            pg_catalog.now() OPERATOR(pg_catalog.-) dead_older_than];
    from_id bigint;
    last_id bigint;
    total bigint;
BEGIN
    IF sent_older_than IS NULL OR shadow_older_than IS NULL OR dead_older_than IS NULL THEN
        RAISE EXCEPTION 'cleanup_in_batches needs an age for each status'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use a very long interval to keep a status, e.g. ''100 years''.';
    END IF;
    IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1, got %', coalesce(batch_size::pg_catalog.text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. 3 LOOP
        total := 0;
        SELECT r.first_id, r.last_id INTO from_id, last_id FROM webhook_outbox._cleanup_range(statuses[i], cutoffs[i]) r;
        WHILE from_id OPERATOR(pg_catalog.<=) last_id LOOP
            total := total OPERATOR(pg_catalog.+)
                     webhook_outbox._cleanup_batch(statuses[i], cutoffs[i], from_id, batch_size);
            from_id := from_id OPERATOR(pg_catalog.+) batch_size::bigint;
            -- Each batch is its own transaction: no long-running snapshot holds
            -- back vacuum of the live queue, and autovacuum can already reclaim
            -- the rows deleted so far.
            COMMIT;
        END LOOP;
        RAISE NOTICE 'cleanup_in_batches: % % deliveries deleted', total, statuses[i];
    END LOOP;
END
$$;
COMMENT ON PROCEDURE cleanup_in_batches(interval, interval, interval, integer) IS
'Retention for large tables: like cleanup(), but commits after each statement (at most batch_size rows), so millions of '
'deletions neither hold one long transaction nor stall the worker. Reports the counts by NOTICE. Run it with CALL outside a '
'transaction block; the caller needs EXECUTE on it, _cleanup_range() and _cleanup_batch().';
-- privileges.sql revokes ALL FUNCTIONS, which leaves procedures out.
REVOKE ALL ON PROCEDURE cleanup_in_batches(interval, interval, interval, integer) FROM PUBLIC;
