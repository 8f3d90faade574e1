//! update_webhook_health and the circuit breaker, end to end with the claim.

use super::{assert_fails, attempt, claim, endpoint, enqueue, health, make_due, one, run, update};
use pgrx::prelude::*;

/// Calls update_webhook_health; returns `fields` (a format() list over the
/// returned row) as text.
fn report(endpoint: i64, result: &str, fields: &str) -> String {
    one(&format!(
        "SELECT format({fields}) FROM webhook_outbox.update_webhook_health({endpoint}, {result}) h"
    ))
}

const STATE: &str = "'%s|%s|%s', h.consecutive_failures, h.health_status, h.circuit_state";

#[pg_test(schema = "tests")]
fn health_returns_the_updated_row() {
    let e = endpoint("");
    assert_eq!(
        report(
            e,
            "200, 100",
            "'%s|%s|%s|%s|%s|%s|%s', h.webhook_id, h.total_deliveries, h.successful_deliveries,
             h.failed_deliveries, h.avg_response_time_ms, h.last_status_code, h.last_success_at IS NOT NULL"
        ),
        format!("{e}|1|1|0|100|200|t")
    );
    // The returned row is the stored row.
    assert_eq!(health::<i64>(e, "total_deliveries"), 1);
}

#[pg_test(schema = "tests")]
fn health_counts_results() {
    let e = endpoint("");
    for result in [
        "200, 10",
        "204, 10",
        "500, 10",
        "NULL, NULL, 'connection reset'",
    ] {
        run(&format!(
            "SELECT webhook_outbox.update_webhook_health({e}, {result})"
        ));
    }
    assert_eq!(
        health::<String>(
            e,
            "format('%s|%s|%s|%s|%s|%s|%s', total_deliveries, successful_deliveries, failed_deliveries,
                    consecutive_failures, last_status_code, last_error, last_failure_at IS NOT NULL)"
        ),
        "4|2|2|2||connection reset|t"
    );
    run(&format!(
        "SELECT webhook_outbox.update_webhook_health({e}, 404, 10)"
    ));
    assert_eq!(
        health::<String>(e, "format('%s|%s', last_status_code, last_error)"),
        "404|HTTP 404"
    );
}

#[pg_test(schema = "tests")]
fn health_response_time_is_an_ewma() {
    let e = endpoint("");
    let avg = |result: &str| report(e, result, "'%s', h.avg_response_time_ms");
    assert_eq!(avg("200, 100"), "100");
    assert_eq!(avg("200, 200"), "120");
    // A result without a time (network error) leaves it.
    assert_eq!(avg("NULL, NULL, 'timeout'"), "120");
    assert_eq!(avg("500, 20"), "100");
}

#[pg_test(schema = "tests")]
fn health_failures_degrade_then_open_the_circuit() {
    let e = endpoint("");
    assert_eq!(report(e, "200, 5", STATE), "0|healthy|closed");
    for n in 1..=4 {
        assert_eq!(report(e, "500, 5", STATE), format!("{n}|degraded|closed"));
    }
    assert!(health::<bool>(e, "circuit_opened_at IS NULL"));
    // circuit_failure_threshold (5) consecutive failures open it.
    assert_eq!(report(e, "500, 5", STATE), "5|unavailable|open");
    assert!(health::<bool>(
        e,
        "circuit_opened_at > now() - interval '1 minute'"
    ));
    let opened_at = health::<String>(e, "circuit_opened_at::text");
    // Late results while open do not restart the open period.
    assert_eq!(report(e, "500, 5", STATE), "6|unavailable|open");
    assert_eq!(health::<String>(e, "circuit_opened_at::text"), opened_at);
    // A success closes it.
    assert_eq!(report(e, "200, 5", STATE), "0|healthy|closed");
    assert!(health::<bool>(e, "circuit_opened_at IS NULL"));
}

#[pg_test(schema = "tests")]
fn health_a_success_resets_the_failure_count() {
    let e = endpoint("");
    for _ in 0..4 {
        report(e, "503, 5", STATE);
    }
    assert_eq!(report(e, "200, 5", STATE), "0|healthy|closed");
    for n in 1..=4 {
        assert_eq!(report(e, "503, 5", STATE), format!("{n}|degraded|closed"));
    }
}

#[pg_test(schema = "tests")]
fn health_threshold_follows_the_guc() {
    run("SET LOCAL webhook_outbox.circuit_failure_threshold = 2");
    let e = endpoint("");
    assert_eq!(report(e, "500, 5", STATE), "1|degraded|closed");
    assert_eq!(report(e, "500, 5", STATE), "2|unavailable|open");
}

#[pg_test(schema = "tests")]
fn health_rejects_bad_input() {
    let e = endpoint("");
    let update = |args: String| format!("SELECT webhook_outbox.update_webhook_health({args})");
    assert_fails(
        &update("-1, 200, 5".into()),
        "42704",
        "endpoint -1 does not exist",
    );
    assert_fails(
        &update(format!("{e}, 99, 5")),
        "22023",
        "status_code must be an HTTP status (100-599), got 99",
    );
    assert_fails(
        &update(format!("{e}, 200, -1")),
        "22023",
        "response_time_ms must be >= 0, got -1",
    );
}

#[pg_test(schema = "tests", error = "endpoint -1 does not exist")]
fn health_unknown_endpoint_is_an_error() {
    run("SELECT webhook_outbox.update_webhook_health(-1, 200, 5)");
}

/// Closed → open (no claims) → half_open (one probe) → closed, or open again
/// when the probe fails.
#[pg_test(schema = "tests")]
fn circuit_opens_probes_and_closes() {
    let e = endpoint("");
    let d = enqueue(e);
    for _ in 0..5 {
        run(&format!(
            "SELECT webhook_outbox.update_webhook_health({e}, 500, 5)"
        ));
    }
    assert_eq!(health::<String>(e, "circuit_state"), "open");
    let waiting = enqueue(e);
    assert_eq!(claim(10), Vec::<i64>::new(), "no claims while open");

    // Open period over: the probe fails, the circuit opens again.
    let open_period_over = || {
        update(
            "health_metrics",
            e,
            "circuit_opened_at = now() - interval '61 seconds'",
        )
    };
    open_period_over();
    assert_eq!(attempt(d, "500, 5"), "retry");
    assert_eq!(
        health::<String>(e, "format('%s|%s', circuit_state, health_status)"),
        "open|unavailable"
    );
    assert!(health::<bool>(
        e,
        "circuit_opened_at > now() - interval '1 minute'"
    ));
    assert_eq!(claim(10), Vec::<i64>::new(), "open for another period");

    // Next period: the probe succeeds and closes it; the rest flows again.
    open_period_over();
    update(
        "deliveries",
        waiting,
        "next_attempt_at = now() + interval '1 hour'",
    );
    assert_eq!(attempt(d, "200, 5"), "sent");
    assert_eq!(
        health::<String>(
            e,
            "format('%s|%s|%s', circuit_state, health_status, consecutive_failures)"
        ),
        "closed|healthy|0"
    );
    make_due(waiting);
    assert_eq!(claim(10), vec![waiting]);
}
