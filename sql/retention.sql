-- Retention: deleting sent, shadow and dead deliveries (with their attempts)
-- and operational events by age, in bounded statements; cleanup_in_batches
-- commits between them. The endpoint audit (endpoint_changes) is kept: it is
-- one row per operator change, and an audit that ages out is no audit.

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

-- Operational events: up to batch_size of those older than cutoff, oldest
-- first (the table is only appended to, so the oldest ids are the oldest
-- events). Callers repeat it until it deletes fewer.
CREATE FUNCTION _cleanup_events(cutoff timestamptz, batch_size integer) RETURNS bigint
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM operational_events
        WHERE id IN (SELECT o.id FROM operational_events o WHERE o.occurred_at < cutoff ORDER BY o.id LIMIT batch_size)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION _cleanup_events(timestamptz, integer) IS
'Internal: one retention statement over operational_events for cleanup() and cleanup_in_batches(); returns the rows deleted.';

CREATE FUNCTION cleanup(
    sent_older_than interval DEFAULT '14 days',
    shadow_older_than interval DEFAULT '7 days',
    dead_older_than interval DEFAULT '30 days',
    dry_run boolean DEFAULT false,
    events_older_than interval DEFAULT '30 days'
) RETURNS TABLE (status text, deleted bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    batch_size constant integer := 10000;
    batch bigint;
    cutoff timestamptz;
    from_id bigint;
    last_id bigint;
BEGIN
    IF sent_older_than IS NULL OR shadow_older_than IS NULL OR dead_older_than IS NULL OR events_older_than IS NULL THEN
        RAISE EXCEPTION 'cleanup needs an age for each status and for the operational events'
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
    status := 'operational_events';
    cutoff := now() - events_older_than;
    IF dry_run THEN
        SELECT count(*) INTO deleted FROM operational_events o WHERE o.occurred_at < cutoff;
    ELSE
        deleted := 0;
        LOOP
            batch := _cleanup_events(cutoff, batch_size);
            deleted := deleted + batch;
            EXIT WHEN batch < batch_size;
        END LOOP;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION cleanup(interval, interval, interval, boolean, interval) IS
'Delete sent, shadow and dead deliveries (and their attempts) and operational events older than the given ages, at most '
'10,000 rows per statement, in the current transaction; returns the count per status (and for operational_events). '
'The endpoint audit is kept. dry_run only counts. '
'For millions of rows prefer CALL cleanup_in_batches(), which commits between batches.';

-- Neither SECURITY DEFINER nor a SET clause: either would forbid COMMIT in a
-- procedure. It runs with the caller's rights and search_path (a superuser's,
-- in the runbook), so every function, operator and type in it is qualified
-- and exactly typed: nothing can resolve to an object in another schema. The
-- deleting is done by _cleanup_batch(), which is SECURITY DEFINER.
CREATE PROCEDURE cleanup_in_batches(
    sent_older_than interval DEFAULT '14 days',
    shadow_older_than interval DEFAULT '7 days',
    dead_older_than interval DEFAULT '30 days',
    batch_size integer DEFAULT 10000,
    events_older_than interval DEFAULT '30 days'
)
LANGUAGE plpgsql
AS $$
DECLARE
    statuses constant pg_catalog.text[] := ARRAY['sent', 'shadow', 'dead'];
    -- Fixed at the start: now() moves on with every COMMIT.
    cutoffs constant pg_catalog.timestamptz[] := ARRAY[pg_catalog.now() OPERATOR(pg_catalog.-) sent_older_than,
                                            pg_catalog.now() OPERATOR(pg_catalog.-) shadow_older_than,
                                            pg_catalog.now() OPERATOR(pg_catalog.-) dead_older_than];
    events_cutoff constant pg_catalog.timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) events_older_than;
    deleted bigint;
    from_id bigint;
    last_id bigint;
    total bigint;
BEGIN
    IF sent_older_than IS NULL OR shadow_older_than IS NULL OR dead_older_than IS NULL OR events_older_than IS NULL THEN
        RAISE EXCEPTION 'cleanup_in_batches needs an age for each status and for the operational events'
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
    total := 0;
    LOOP
        deleted := webhook_outbox._cleanup_events(events_cutoff, batch_size);
        total := total OPERATOR(pg_catalog.+) deleted;
        COMMIT;
        EXIT WHEN deleted OPERATOR(pg_catalog.<) batch_size::bigint;
    END LOOP;
    RAISE NOTICE 'cleanup_in_batches: % operational events deleted', total;
END
$$;
COMMENT ON PROCEDURE cleanup_in_batches(interval, interval, interval, integer, interval) IS
'Retention for large tables: like cleanup(), but commits after each statement (at most batch_size rows), so millions of '
'deletions neither hold one long transaction nor stall the worker. Reports the counts by NOTICE. Run it with CALL outside a '
'transaction block; the caller needs EXECUTE on it, _cleanup_range(), _cleanup_batch() and _cleanup_events().';
-- privileges.sql revokes ALL FUNCTIONS, which leaves procedures out.
REVOKE ALL ON PROCEDURE cleanup_in_batches(interval, interval, interval, integer, interval) FROM PUBLIC;
