-- Operator views, read in psql. None exposes endpoints.secret: a role granted
-- only these views cannot read signing secrets. Nor a URL's path and query,
-- which often carry a token of their own: the views show scheme, host and
-- port; the full URL is for roles with rights on the endpoints table.

-- Queue counts, defined once for v_queue_status, the dashboard, metrics() and
-- count_pending_by_status(): deliveries per endpoint, status and state
-- (delivery_state). Readers filter on status, and that filter reaches the
-- scan (it is a grouping column), so a count of unfinished rows reads the
-- partial indexes, never the history of sent rows.
CREATE VIEW _queue_counts AS
SELECT d.endpoint_id,
       d.status,
       delivery_state(d.status, d.locked_until) AS state,
       count(*)                                 AS deliveries,
       min(d.created_at)                        AS oldest_created_at,
       min(d.next_attempt_at)                   AS next_attempt_at
FROM deliveries d
GROUP BY d.endpoint_id, d.status, delivery_state(d.status, d.locked_until)
UNION ALL
-- emit()'s events not yet moved out of the intake: already a delivery for
-- each endpoint they go to, as far as operators are concerned.
SELECT r.endpoint_id,
       i.status,
       delivery_state(i.status, NULL::timestamptz),
       count(*),
       min(i.created_at),
       min(i.created_at)
FROM intake i
CROSS JOIN LATERAL unnest(i.endpoint_ids) AS r(endpoint_id)
GROUP BY r.endpoint_id, i.status;
COMMENT ON VIEW _queue_counts IS
'Internal: deliveries per endpoint, status and state (sending: under a live lease), counting the intake''s events as theirs; filter on status. '
'An endpoint may have two rows of one status: sum them.';

CREATE VIEW v_queue_status AS
SELECT q.state                                              AS status,
       sum(q.deliveries)::bigint                            AS count,
       min(q.oldest_created_at)                             AS oldest_created_at,
       date_trunc('second', now() - min(q.oldest_created_at)) AS oldest_age,
       min(q.next_attempt_at) FILTER (WHERE q.state IN ('pending', 'retry')) AS next_attempt_at
FROM _queue_counts q
GROUP BY q.state
ORDER BY array_position(ARRAY['pending', 'retry', 'sending', 'shadow', 'dead', 'sent'], q.state);
COMMENT ON VIEW v_queue_status IS 'Deliveries per status: count and age of the oldest.';

CREATE VIEW v_webhook_health_dashboard AS
SELECT e.id                                        AS webhook_id,
       e.name,
       _url_origin(e.url)                          AS url,
       e.enabled,
       e.disabled_reason,
       h.health_status,
       h.circuit_state,
       h.circuit_opened_at,
       h.total_deliveries,
       h.successful_deliveries,
       h.failed_deliveries,
       round(100.0 * h.successful_deliveries / nullif(h.total_deliveries, 0), 2) AS success_rate_pct,
       round(h.avg_response_time_ms::numeric, 1)   AS avg_response_time_ms,
       h.consecutive_failures,
       coalesce(q.pending, 0)                      AS pending,
       coalesce(q.retry, 0)                        AS retry,
       coalesce(q.sending, 0)                      AS sending,
       coalesce(q.dead, 0)                         AS dead,
       h.last_success_at,
       h.last_failure_at,
       h.last_error
FROM endpoints e
JOIN health_metrics h ON h.webhook_id = e.id
LEFT JOIN (
    -- Only unfinished and dead rows: read through the partial indexes, not the history.
    SELECT q.endpoint_id,
           (sum(q.deliveries) FILTER (WHERE q.state = 'pending'))::bigint AS pending,
           (sum(q.deliveries) FILTER (WHERE q.state = 'retry'))::bigint   AS retry,
           (sum(q.deliveries) FILTER (WHERE q.state = 'sending'))::bigint AS sending,
           (sum(q.deliveries) FILTER (WHERE q.state = 'dead'))::bigint    AS dead
    FROM _queue_counts q
    WHERE q.status IN ('pending', 'retry', 'dead')
    GROUP BY q.endpoint_id
) q ON q.endpoint_id = e.id
WHERE e.deleted_at IS NULL
ORDER BY e.id;
COMMENT ON VIEW v_webhook_health_dashboard IS 'Per endpoint (deleted ones left out): health, circuit, success rate, average response time, queue counts, last error. url shows scheme, host and port only.';

CREATE VIEW v_degraded_webhooks AS
SELECT *
FROM v_webhook_health_dashboard
WHERE health_status <> 'healthy' OR circuit_state <> 'closed' OR NOT enabled
ORDER BY CASE health_status WHEN 'unavailable' THEN 0 WHEN 'degraded' THEN 1 ELSE 2 END, consecutive_failures DESC;
COMMENT ON VIEW v_degraded_webhooks IS 'Endpoints that are degraded, unavailable, circuit-broken or disabled, worst first.';

CREATE VIEW v_webhook_performance AS
SELECT e.id AS webhook_id,
       e.name,
       w.window_name AS "window",
       count(a.delivery_id)                                                  AS attempts,
       count(a.delivery_id) FILTER (WHERE a.status_code BETWEEN 200 AND 299) AS successes,
       round(100.0 * count(a.delivery_id) FILTER (WHERE a.status_code BETWEEN 200 AND 299) / nullif(count(a.delivery_id), 0), 2)
                                                                    AS success_rate_pct,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms)::numeric, 1)  AS p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms)::numeric, 1) AS p95_ms
FROM endpoints e
CROSS JOIN (VALUES ('1 hour', interval '1 hour'), ('1 day', interval '1 day')) w(window_name, span)
LEFT JOIN attempts a ON a.endpoint_id = e.id AND a.attempted_at >= now() - w.span
WHERE e.deleted_at IS NULL
GROUP BY e.id, e.name, w.window_name, w.span
ORDER BY e.id, w.span;
COMMENT ON VIEW v_webhook_performance IS 'Per endpoint (deleted ones left out), over the last hour and the last day: attempts, success rate, p50/p95 response time.';

CREATE VIEW v_dead_letters AS
SELECT d.id AS delivery_id,
       d.endpoint_id,
       e.name AS endpoint_name,
       d.event_id,
       d.event_type,
       d.subject_id,
       d.attempt_count,
       d.last_status_code,
       d.last_error,
       d.created_at,
       d.dead_at
FROM deliveries d
JOIN endpoints e ON e.id = d.endpoint_id
WHERE d.status = 'dead'
ORDER BY d.dead_at DESC;
COMMENT ON VIEW v_dead_letters IS 'Dead deliveries, newest first, with attempt count and last error. Replay with replay_dead_letters() or requeue_dead().';

-- The worker slots in shared memory (empty without shared_preload_libraries).
CREATE VIEW v_worker_status AS
SELECT w.worker,
       w.pid,
       w.pid IS NOT NULL AS running,
       to_timestamp(w.started_ms / 1000.0)     AS started_at,
       to_timestamp(w.last_active_ms / 1000.0) AS last_active_at,
       w.sent,
       w.failed,
       w.last_error,
       to_timestamp(w.last_error_ms / 1000.0)  AS last_error_at,
       a.state,
       a.query AS activity
FROM _worker_status() w
LEFT JOIN pg_stat_activity a ON a.pid = w.pid;
COMMENT ON VIEW v_worker_status IS 'Delivery workers: pid, running, deliveries settled since start, last error, current activity.';

CREATE FUNCTION count_pending_by_status()
RETURNS TABLE (status text, count bigint, oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT q.state, sum(q.deliveries)::bigint, min(q.oldest_created_at)
    FROM _queue_counts q
    WHERE q.status IN ('pending', 'retry')
    GROUP BY q.state
    ORDER BY q.state
$$;
COMMENT ON FUNCTION count_pending_by_status() IS
'Deliveries still to be delivered, per state (pending, retry, sending), with the creation time of the oldest. '
'Shadow rows are never sent: v_queue_status counts them.';
