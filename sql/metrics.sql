-- metrics(): the Prometheus text exposition format, built in SQL so that psql,
-- an external exporter and the worker's /metrics listener (src/worker/main_loop.rs)
-- all read the same numbers. Each query below reads one partial index or a
-- small table; none scans the history of sent deliveries.

-- '{k1="v1",k2="v2"}' with label values escaped as the format requires
-- (backslash, double quote, newline); a NULL value becomes "".
CREATE FUNCTION _prom_labels(VARIADIC pairs text[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT '{' || string_agg(
               format('%s="%s"', pairs[i],
                      replace(replace(replace(pairs[i + 1], E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')),
               ',' ORDER BY i) || '}'
    FROM generate_series(1, cardinality(pairs), 2) i
$$;
COMMENT ON FUNCTION _prom_labels(text[]) IS 'Internal: a Prometheus label set from name/value pairs, values escaped.';

-- One metric family: HELP and TYPE lines, then each sample as name || sample,
-- where a sample is '[suffix]{labels} value'.
CREATE FUNCTION _prom_family(name text, kind text, help text, samples text[]) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT format(E'# HELP %s %s\n# TYPE %s %s\n', name,
                  replace(replace(help, E'\\', E'\\\\'), E'\n', E'\\n'), name, kind)
        || coalesce((SELECT string_agg(name || s || E'\n', '' ORDER BY o)
                     FROM unnest(samples) WITH ORDINALITY u(s, o)), '')
$$;
COMMENT ON FUNCTION _prom_family(text, text, text, text[]) IS 'Internal: one Prometheus metric family as exposition text.';

-- Without enable_seqscan = off the planner counts shadow rows (a BRIN index:
-- its cost estimate assumes every block range) with a scan of the whole table,
-- history included, on every scrape. The cost that setting gives a scan it
-- cannot avoid (the intake's, in _queue_counts) would otherwise make the plan
-- look worth compiling with JIT: a second per scrape, for a query of a few
-- milliseconds.
CREATE FUNCTION metrics() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
    -- The duration histogram counts the attempts of the current clock hour:
    -- monotonic within the hour, then back to zero, which Prometheus reads as
    -- a counter reset. Counting all retained attempts instead would drop at
    -- every cleanup (a bogus reset) and cost a scan of the whole table.
    hour_start constant timestamptz := date_trunc('hour', now());
    queue record;
BEGIN
    -- Pending, retry and sending rows are all in the due index: one pass counts them.
    SELECT coalesce(sum(q.deliveries) FILTER (WHERE q.state = 'pending'), 0) AS pending,
           coalesce(sum(q.deliveries) FILTER (WHERE q.state = 'retry'), 0)   AS retry,
           coalesce(sum(q.deliveries) FILTER (WHERE q.state = 'sending'), 0) AS sending,
           min(q.oldest_created_at)                                          AS oldest
    INTO queue
    FROM _queue_counts q
    WHERE q.status IN ('pending', 'retry');
    RETURN _prom_family('webhook_deliveries_total', 'counter',
        'HTTP attempts settled per endpoint: status sent (2xx) or failed (anything else). From health_metrics, since the endpoint was created.',
        ARRAY(SELECT format('%s %s', _prom_labels('endpoint', h.webhook_id::text, 'status', s.status), s.n)
              FROM health_metrics h
              CROSS JOIN LATERAL (VALUES ('sent', h.successful_deliveries), ('failed', h.failed_deliveries)) s(status, n)
              ORDER BY h.webhook_id, s.status DESC))
    || _prom_family('webhook_endpoint_info', 'gauge',
        'Always 1; carries each endpoint''s name, to join on the endpoint label.',
        ARRAY(SELECT format('%s 1', _prom_labels('endpoint', e.id::text, 'name', e.name))
              FROM endpoints e WHERE e.deleted_at IS NULL ORDER BY e.id))
    || _prom_family('webhook_delivery_duration_seconds', 'histogram',
        'Duration of HTTP attempts per endpoint, over the current clock hour (resets on the hour).',
        ARRAY(WITH per_ms AS (
                  -- Group first: at most endpoints x distinct milliseconds rows.
                  SELECT a.endpoint_id, a.duration_ms, count(*) AS n
                  FROM attempts a
                  WHERE a.attempted_at >= hour_start AND a.duration_ms IS NOT NULL
                  GROUP BY a.endpoint_id, a.duration_ms
              ), buckets AS (
                  SELECT e.id AS endpoint_id, l.ord,
                         format('_bucket%s %s',
                                _prom_labels('endpoint', e.id::text, 'le', coalesce((l.le_ms / 1000.0)::float8::text, '+Inf')),
                                coalesce(sum(p.n) FILTER (WHERE l.le_ms IS NULL OR p.duration_ms <= l.le_ms), 0)) AS line
                  FROM endpoints e
                  -- Prometheus' default buckets, 5 ms to 10 s, in whole milliseconds.
                  CROSS JOIN unnest('{5,10,25,50,100,250,500,1000,2500,5000,10000,NULL}'::integer[]) WITH ORDINALITY l(le_ms, ord)
                  LEFT JOIN per_ms p ON p.endpoint_id = e.id
                  WHERE e.deleted_at IS NULL
                  GROUP BY e.id, l.le_ms, l.ord
              ), totals AS (
                  SELECT e.id AS endpoint_id, coalesce(sum(p.n), 0) AS n,
                         coalesce(sum(p.n * p.duration_ms), 0)::float8 / 1000 AS seconds
                  FROM endpoints e
                  LEFT JOIN per_ms p ON p.endpoint_id = e.id
                  WHERE e.deleted_at IS NULL
                  GROUP BY e.id
              )
              SELECT line FROM (
                  SELECT endpoint_id, ord, line FROM buckets
                  UNION ALL
                  SELECT t.endpoint_id, 100 + s.ord, s.line
                  FROM totals t
                  CROSS JOIN LATERAL (VALUES (1, format('_sum%s %s', _prom_labels('endpoint', t.endpoint_id::text), t.seconds)),
                                             (2, format('_count%s %s', _prom_labels('endpoint', t.endpoint_id::text), t.n))) s(ord, line)
              ) lines
              ORDER BY endpoint_id, ord))
    -- The others one query per status, each matching a partial index of deliveries.
    || _prom_family('webhook_queue_depth', 'gauge',
        'Deliveries per unfinished status (sent rows are history: see webhook_deliveries_total).',
        ARRAY['{status="pending"} ' || queue.pending,
              '{status="retry"} '   || queue.retry,
              '{status="sending"} ' || queue.sending,
              -- The range condition lets the BRIN index of shadow rows serve.
              '{status="shadow"} '  || (SELECT count(*) FROM deliveries d WHERE d.status = 'shadow' AND d.created_at > '-infinity'),
              '{status="dead"} '    || (SELECT coalesce(sum(q.deliveries), 0) FROM _queue_counts q WHERE q.status = 'dead')])
    || _prom_family('webhook_oldest_pending_age_seconds', 'gauge',
        'Age of the oldest delivery still pending, in retry or sending (from created_at); 0 when there is none.',
        ARRAY[' ' || round(coalesce(extract(epoch FROM now() - queue.oldest), 0), 3)])
    || _prom_family('webhook_circuit_open', 'gauge',
        '1 while the endpoint''s circuit breaker is open or half-open (at most a probe gets through), else 0.',
        ARRAY(SELECT format('%s %s', _prom_labels('endpoint', h.webhook_id::text), (h.circuit_state <> 'closed')::integer)
              FROM health_metrics h ORDER BY h.webhook_id))
    || _prom_family('webhook_worker_up', 'gauge',
        '1 while the delivery worker is running, else 0. No samples when the library is not in shared_preload_libraries.',
        ARRAY(SELECT format('%s %s', _prom_labels('worker', w.worker::text), (w.pid IS NOT NULL)::integer)
              FROM _worker_status() w ORDER BY w.worker))
    || _prom_family('webhook_rollout_enabled', 'gauge',
        '1 while the rollout flag is enabled, else 0.',
        ARRAY(SELECT format('%s %s', _prom_labels('flag', f.flag_key), f.enabled::integer)
              FROM feature_flags f ORDER BY f.flag_key))
    || _prom_family('webhook_rollout_percentage', 'gauge',
        'Share of subjects (0-100) the rollout flag admits.',
        ARRAY(SELECT format('%s %s', _prom_labels('flag', f.flag_key), f.percentage)
              FROM feature_flags f ORDER BY f.flag_key))
    || _prom_family('webhook_rollout_events_last_hour', 'gauge',
        'Events emitted under the rollout flag in the last hour (as in v_rollout_status).',
        ARRAY(SELECT format('%s %s', _prom_labels('flag', f.flag_key),
                            (SELECT count(DISTINCT d.event_id) FROM deliveries d
                             WHERE d.flag_key = f.flag_key AND d.created_at >= now() - interval '1 hour'))
              FROM feature_flags f ORDER BY f.flag_key));
END
$$;
COMMENT ON FUNCTION metrics() IS
'Prometheus text exposition: webhook_deliveries_total{endpoint,status}, webhook_endpoint_info{endpoint,name}, '
'webhook_delivery_duration_seconds{endpoint} (histogram over the current clock hour), webhook_queue_depth{status}, '
'webhook_oldest_pending_age_seconds, webhook_circuit_open{endpoint}, webhook_worker_up{worker}, and per rollout flag '
'webhook_rollout_enabled, webhook_rollout_percentage and webhook_rollout_events_last_hour. '
'Served on webhook_outbox.metrics_listen by the worker; grant EXECUTE to a monitoring role to scrape it from SQL.';
