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
-- give no order.) A kind of row is a delivery status (sent, shadow, dead) or
-- operational_events, which age by occurred_at. First the id range, from the
-- age index:
CREATE FUNCTION _cleanup_range(kind text, cutoff timestamptz, OUT first_id bigint, OUT last_id bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    IF kind = 'operational_events' THEN
        SELECT min(o.id), max(o.id) INTO first_id, last_id FROM operational_events o WHERE o.occurred_at < cutoff;
    ELSE
        EXECUTE format('SELECT min(id), max(id) FROM webhook_outbox.deliveries WHERE status = $1 AND %I < $2', _age_column(kind))
            INTO first_id, last_id USING kind, cutoff;
    END IF;
END
$$;
COMMENT ON FUNCTION _cleanup_range(text, timestamptz) IS
'Internal: the ids between which cleanup finds the rows of a kind (a delivery status, or operational_events) older than cutoff (NULLs: none).';

-- Then one window: the matching rows among ids [from_id, from_id + batch_size),
-- deliveries with their attempts.
CREATE FUNCTION _cleanup_batch(kind text, cutoff timestamptz, from_id bigint, batch_size integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    deleted bigint;
BEGIN
    IF kind = 'operational_events' THEN
        DELETE FROM operational_events o
        WHERE o.id >= from_id AND o.id < from_id + batch_size AND o.occurred_at < cutoff;
        GET DIAGNOSTICS deleted = ROW_COUNT;
        RETURN deleted;
    END IF;
    EXECUTE format($q$
        WITH gone AS (
            DELETE FROM webhook_outbox.deliveries
            WHERE id >= $3 AND id < $3 + $4 AND status = $1 AND %I < $2
            RETURNING id
        ), gone_attempts AS (
            DELETE FROM webhook_outbox.attempts WHERE delivery_id IN (SELECT id FROM gone)
        )
        SELECT count(*) FROM gone$q$, _age_column(kind))
        INTO deleted USING kind, cutoff, from_id, batch_size;
    RETURN deleted;
END
$$;
COMMENT ON FUNCTION _cleanup_batch(text, timestamptz, bigint, integer) IS
'Internal: one retention statement for cleanup() and cleanup_in_batches(); returns the rows deleted.';

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
    cutoff timestamptz;
    from_id bigint;
    last_id bigint;
BEGIN
    IF sent_older_than IS NULL OR shadow_older_than IS NULL OR dead_older_than IS NULL OR events_older_than IS NULL THEN
        RAISE EXCEPTION 'cleanup needs an age for each status and for the operational events'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use a very long interval to keep a status, e.g. ''100 years''.';
    END IF;
    -- status: the kind of row (see _cleanup_range).
    FOR status, cutoff IN VALUES ('sent', now() - sent_older_than),
                                 ('shadow', now() - shadow_older_than),
                                 ('dead', now() - dead_older_than),
                                 ('operational_events', now() - events_older_than)
    LOOP
        IF dry_run AND status = 'operational_events' THEN
            SELECT count(*) INTO deleted FROM operational_events o WHERE o.occurred_at < cutoff;
        ELSIF dry_run THEN
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
    kinds constant pg_catalog.text[] := ARRAY['sent', 'shadow', 'dead', 'operational_events'];
    labels constant pg_catalog.text[] := ARRAY['sent deliveries', 'shadow deliveries', 'dead deliveries',
                                               'operational events'];
    -- Fixed at the start: now() moves on with every COMMIT.
    cutoffs constant pg_catalog.timestamptz[] := ARRAY[pg_catalog.now() OPERATOR(pg_catalog.-) sent_older_than,
                                            pg_catalog.now() OPERATOR(pg_catalog.-) shadow_older_than,
                                            pg_catalog.now() OPERATOR(pg_catalog.-) dead_older_than,
                                            pg_catalog.now() OPERATOR(pg_catalog.-) events_older_than];
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
    FOR i IN 1 .. 4 LOOP
        total := 0;
        SELECT r.first_id, r.last_id INTO from_id, last_id FROM webhook_outbox._cleanup_range(kinds[i], cutoffs[i]) r;
        WHILE from_id OPERATOR(pg_catalog.<=) last_id LOOP
            total := total OPERATOR(pg_catalog.+)
                     webhook_outbox._cleanup_batch(kinds[i], cutoffs[i], from_id, batch_size);
            from_id := from_id OPERATOR(pg_catalog.+) batch_size::bigint;
            -- Each batch is its own transaction: no long-running snapshot holds
            -- back vacuum of the live queue, and autovacuum can already reclaim
            -- the rows deleted so far.
            COMMIT;
        END LOOP;
        RAISE NOTICE 'cleanup_in_batches: % % deleted', total, labels[i];
    END LOOP;
END
$$;
COMMENT ON PROCEDURE cleanup_in_batches(interval, interval, interval, integer, interval) IS
'Retention for large tables: like cleanup(), but commits after each statement (at most batch_size rows), so millions of '
'deletions neither hold one long transaction nor stall the worker. Reports the counts by NOTICE. Run it with CALL outside a '
'transaction block; the caller needs EXECUTE on it, _cleanup_range() and _cleanup_batch().';
-- privileges.sql revokes ALL FUNCTIONS, which leaves procedures out.
REVOKE ALL ON PROCEDURE cleanup_in_batches(interval, interval, interval, integer, interval) FROM PUBLIC;
