-- Operator views, read in psql. None exposes endpoints.secret: a role granted
-- only these views cannot read signing secrets. Nor a URL's path and query,
-- which often carry a token of their own: the views show scheme, host and
-- port; the full URL is for roles with rights on the endpoints table.

CREATE VIEW v_queue_status AS
SELECT delivery_state(d.status, d.locked_until) AS status,
       count(*)                                    AS count,
       min(d.created_at)                           AS oldest_created_at,
       date_trunc('second', now() - min(d.created_at)) AS oldest_age,
       min(d.next_attempt_at) FILTER (WHERE d.status IN ('pending', 'retry') AND d.locked_until IS NULL) AS next_attempt_at
FROM deliveries d
GROUP BY 1
ORDER BY array_position(ARRAY['pending', 'retry', 'sending', 'shadow', 'dead', 'sent'], delivery_state(d.status, d.locked_until));
COMMENT ON VIEW v_queue_status IS 'Deliveries per status: count and age of the oldest.';

CREATE VIEW v_webhook_health_dashboard AS
SELECT e.id                                        AS webhook_id,
       e.name,
       substring(e.url FROM '^[^:/?#]+://[^/?#]*')  AS url,
       e.enabled,
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
    SELECT d.endpoint_id,
           count(*) FILTER (WHERE delivery_state(d.status, d.locked_until) = 'pending') AS pending,
           count(*) FILTER (WHERE delivery_state(d.status, d.locked_until) = 'retry')   AS retry,
           count(*) FILTER (WHERE delivery_state(d.status, d.locked_until) = 'sending') AS sending,
           count(*) FILTER (WHERE d.status = 'dead')                                    AS dead
    FROM deliveries d
    WHERE d.status IN ('pending', 'retry', 'dead')
    GROUP BY d.endpoint_id
) q ON q.endpoint_id = e.id
ORDER BY e.id;
COMMENT ON VIEW v_webhook_health_dashboard IS 'Per endpoint: health, circuit, success rate, average response time, queue counts, last error. url shows scheme, host and port only.';

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
GROUP BY e.id, e.name, w.window_name, w.span
ORDER BY e.id, w.span;
COMMENT ON VIEW v_webhook_performance IS 'Per endpoint, over the last hour and the last day: attempts, success rate, p50/p95 response time.';

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
