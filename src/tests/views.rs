//! count_pending_by_status and the operator views, over one known setup.

use super::{column, endpoint, enqueue, one, run, update};
use pgrx::prelude::*;

/// Endpoints of the setup.
struct Setup {
    alpha: i64,
    beta: i64,
    /// Deliveries of beta that died one and two hours ago.
    dead: [i64; 2],
}

/// - alpha: healthy (results 200, 200, 500, 200); 2 pending (one created an
///   hour ago), 1 sent with five attempts rows (see `v_webhook_performance`).
/// - beta: circuit open after five failures; 1 retry, 1 sending, 2 dead, 1 shadow.
/// - gamma: healthy but disabled. delta: degraded (one failure).
fn known_setup() -> Setup {
    let alpha = endpoint("name => 'alpha'");
    let beta = endpoint("name => 'beta'");
    let gamma = endpoint("name => 'gamma'");
    let delta = endpoint("name => 'delta'");
    update("endpoints", gamma, "enabled = false");
    let health = |e: i64, results: &[&str]| {
        for r in results {
            run(&format!(
                "SELECT webhook_outbox.update_webhook_health({e}, {r})"
            ));
        }
    };
    health(alpha, &["200, 100", "200, 200", "500, 40", "200, 60"]);
    health(beta, &["500, 10"; 5]);
    health(delta, &["503, 10"]);

    let with = |e: i64, set: &str| {
        let d = enqueue(e);
        update("deliveries", d, set);
        d
    };
    with(alpha, "created_at = now() - interval '1 hour'");
    enqueue(alpha);
    let sent = with(alpha, "status = 'sent', sent_at = now(), attempt_count = 1");
    with(
        beta,
        "status = 'retry', attempt_count = 1, last_status_code = 500, last_error = 'HTTP 500'",
    );
    with(
        beta,
        "attempt_count = 1, locked_until = now() + interval '30 seconds'",
    );
    let dead = [
        with(
            beta,
            "status = 'dead', attempt_count = 5, last_status_code = 500, last_error = 'HTTP 500',
                    dead_at = now() - interval '1 hour'",
        ),
        with(
            beta,
            "status = 'dead', attempt_count = 1, last_status_code = 410, last_error = 'gone',
                    dead_at = now() - interval '2 hours'",
        ),
    ];
    with(beta, "status = 'shadow'");

    // (minutes ago, duration, status): four in the last hour, one more in the
    // last day, one older than a day.
    for (ago, ms, code) in [
        (10, 10, "200"),
        (20, 20, "200"),
        (30, 30, "500"),
        (40, 40, "NULL"),
        (300, 100, "200"),
        (3000, 1, "200"),
    ] {
        run(&format!(
            "INSERT INTO webhook_outbox.attempts (delivery_id, endpoint_id, attempt_no, attempted_at, duration_ms, status_code)
             VALUES ({sent}, {alpha}, 1, now() - interval '{ago} minutes', {ms}, {code})"
        ));
    }
    Setup { alpha, beta, dead }
}

#[pg_test(schema = "tests")]
fn count_pending_by_status_counts_unfinished_deliveries() {
    known_setup();
    assert_eq!(
        column::<String>(
            "SELECT format('%s=%s/%s', status, count, now() - oldest) FROM webhook_outbox.count_pending_by_status()"
        ),
        // Shadow rows are never sent: v_queue_status counts them.
        ["pending=2/01:00:00", "retry=1/00:00:00", "sending=1/00:00:00"]
    );
}

#[pg_test(schema = "tests")]
fn count_pending_by_status_on_an_empty_outbox() {
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.count_pending_by_status()"),
        0
    );
}

#[pg_test(schema = "tests")]
fn v_queue_status_counts_every_status() {
    known_setup();
    assert_eq!(
        column::<String>(
            "SELECT format('%s=%s/%s/%s', status, count, oldest_age, next_attempt_at IS NOT NULL)
             FROM webhook_outbox.v_queue_status"
        ),
        [
            "pending=2/01:00:00/t",
            "retry=1/00:00:00/t",
            "sending=1/00:00:00/f",
            "shadow=1/00:00:00/f",
            "dead=2/00:00:00/f",
            "sent=1/00:00:00/f",
        ]
    );
}

#[pg_test(schema = "tests")]
fn v_webhook_health_dashboard_per_endpoint() {
    known_setup();
    assert_eq!(
        column::<String>(
            "SELECT format('%s %s %s %s/%s/%s %s%% %sms c%s p%s r%s s%s d%s [%s]', name, health_status, circuit_state,
                           total_deliveries, successful_deliveries, failed_deliveries, success_rate_pct,
                           avg_response_time_ms, consecutive_failures, pending, retry, sending, dead, last_error)
             FROM webhook_outbox.v_webhook_health_dashboard"
        ),
        [
            // EWMA of 100, 200, 40, 60 with alpha 0.2: 100, 120, 104, 95.2.
            "alpha healthy closed 4/3/1 75.00% 95.2ms c0 p2 r0 s0 d0 [HTTP 500]",
            "beta unavailable open 5/0/5 0.00% 10.0ms c5 p0 r1 s1 d2 [HTTP 500]",
            "gamma healthy closed 0/0/0 % ms c0 p0 r0 s0 d0 []",
            "delta degraded closed 1/0/1 0.00% 10.0ms c1 p0 r0 s0 d0 [HTTP 503]",
        ]
    );
}

#[pg_test(schema = "tests")]
fn v_degraded_webhooks_lists_the_unhealthy_worst_first() {
    let s = known_setup();
    assert_eq!(
        column::<String>(
            "SELECT format('%s:%s:%s', name, health_status, enabled) FROM webhook_outbox.v_degraded_webhooks"
        ),
        ["beta:unavailable:t", "delta:degraded:t", "gamma:healthy:f"]
    );
    // A success takes an endpoint off the list.
    run(&format!(
        "SELECT webhook_outbox.update_webhook_health({}, 200, 5)",
        s.beta
    ));
    assert_eq!(
        column::<String>("SELECT name FROM webhook_outbox.v_degraded_webhooks"),
        ["delta", "gamma"]
    );
}

#[pg_test(schema = "tests")]
fn v_webhook_performance_per_endpoint_and_window() {
    let s = known_setup();
    let rows = |e: i64| -> Vec<String> {
        column(&format!(
            "SELECT format('%s %s: %s %s %s %s %s', name, \"window\", attempts, successes, success_rate_pct,
                           round(p50_ms::numeric, 1), round(p95_ms::numeric, 1))
             FROM webhook_outbox.v_webhook_performance WHERE webhook_id = {e}"
        ))
    };
    assert_eq!(
        rows(s.alpha),
        // Last hour: 10, 20, 30 (500), 40 (network error); the day adds 100.
        [
            "alpha 1 hour: 4 2 50.00 25.0 38.5",
            "alpha 1 day: 5 3 60.00 30.0 88.0"
        ]
    );
    assert_eq!(rows(s.beta), ["beta 1 hour: 0 0   ", "beta 1 day: 0 0   "]);
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.v_webhook_performance"),
        8
    );
}

#[pg_test(schema = "tests")]
fn v_dead_letters_newest_first() {
    let s = known_setup();
    assert_eq!(
        column::<String>(
            "SELECT format('%s|%s|%s|%s|%s|%s', delivery_id, endpoint_id, endpoint_name, attempt_count,
                           last_status_code, last_error)
             FROM webhook_outbox.v_dead_letters"
        ),
        [format!("{}|{}|beta|5|500|HTTP 500", s.dead[0], s.beta), format!("{}|{}|beta|1|410|gone", s.dead[1], s.beta),]
    );
}

#[pg_test(schema = "tests")]
fn v_worker_status_is_empty_without_workers() {
    // The test cluster runs with webhook_outbox.workers = 0 (see pg_test in lib.rs).
    assert_eq!(
        one::<String>("SELECT current_setting('webhook_outbox.workers')"),
        "0"
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.v_worker_status"),
        0
    );
    assert_eq!(
        column::<String>(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = 'webhook_outbox.v_worker_status'::regclass AND attnum > 0 ORDER BY attnum"
        ),
        [
            "worker",
            "pid",
            "running",
            "started_at",
            "last_active_at",
            "sent",
            "failed",
            "last_error",
            "last_error_at",
            "state",
            "activity"
        ]
    );
}

#[pg_test(schema = "tests")]
fn views_show_endpoint_urls_without_path_or_query() {
    let e = endpoint("");
    update(
        "endpoints",
        e,
        "url = 'https://hooks.example.com:8443/t/s3cr3t-token?key=abc#frag'",
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT url FROM webhook_outbox.v_webhook_health_dashboard WHERE webhook_id = {e}"
        )),
        "https://hooks.example.com:8443"
    );
}
