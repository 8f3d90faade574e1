//! record_attempt: the one place an attempt's outcome is decided.

use super::{
    assert_fails, attempt, claim, delay_s, delivery, endpoint, enqueue, health, lease, make_due,
    maybe, one, run, update,
};
use pgrx::prelude::*;

/// The attempts rows of a delivery as `attempt_no:status_code:duration_ms:error`.
fn attempts_of(d: i64) -> Vec<String> {
    super::column(&format!(
        "SELECT format('%s:%s:%s:%s', attempt_no, status_code, duration_ms, error)
         FROM webhook_outbox.attempts WHERE delivery_id = {d} ORDER BY attempt_no"
    ))
}

/// Each attempt's failure class (`-` for none), in order.
fn classes_of(d: i64) -> String {
    super::one(&format!(
        "SELECT string_agg(coalesce(failure_class, '-'), ',' ORDER BY attempt_no)
         FROM webhook_outbox.attempts WHERE delivery_id = {d}"
    ))
}

/// An external worker's report is classed by what it says: its status, or a
/// connection failure without one.
#[pg_test(schema = "tests")]
fn reported_attempts_are_classed() {
    run("SET LOCAL webhook_outbox.circuit_failure_threshold = 100");
    let d = enqueue(endpoint(""));
    for result in ["503, 1", "NULL, 1, 'reset'", "302, 1"] {
        attempt(d, result);
    }
    assert_eq!(classes_of(d), "http_status,connection,redirect");
    let sent = enqueue(endpoint(""));
    attempt(sent, "204, 1");
    assert_eq!(classes_of(sent), "-");
    // Or by the class it names, which a success cannot have.
    let named = enqueue(endpoint(""));
    attempt(
        named,
        "NULL, 1000, 'no response', failure_class => 'timeout'",
    );
    assert_eq!(classes_of(named), "timeout");
    make_due(named);
    assert_eq!(claim(100), vec![named]);
    let call = |args: &str| {
        format!(
            "SELECT webhook_outbox.record_attempt({named}, {}, {args})",
            lease(named)
        )
    };
    assert_fails(
        &call("NULL, 1, failure_class => 'Timeout'"),
        "22023",
        "unknown failure_class \"Timeout\": use one of timeout, dns, connect",
    );
    assert_fails(
        &call("200, 1, failure_class => 'tls'"),
        "22023",
        "a 200 response is a success: it has no failure_class",
    );
    assert_eq!(classes_of(named), "timeout", "nothing recorded");
}

#[track_caller]
fn assert_delay(d: i64, expected_s: f64) {
    let delay = delay_s(d);
    assert!(
        (expected_s * 0.9..=expected_s * 1.1).contains(&delay),
        "delay {delay}s, expected {expected_s}s ± 10%"
    );
}

#[pg_test(schema = "tests")]
fn record_attempt_2xx_is_sent() {
    let e = endpoint("");
    let d = enqueue(e);
    assert_eq!(attempt(d, "200, 12"), "sent");
    assert_eq!(
        delivery::<String>(
            d,
            "format('%s|%s|%s|%s|%s', status, attempt_count, last_status_code, sent_at = now(), locked_until)"
        ),
        "sent|1|200|t|"
    );
    assert_eq!(attempts_of(d), vec![format!("1:200:12:")]);
    assert_eq!(
        health::<String>(
            e,
            "format('%s/%s', successful_deliveries, total_deliveries)"
        ),
        "1/1"
    );
    for code in [201, 204, 299] {
        assert_eq!(
            attempt(enqueue(e), &format!("{code}, 1")),
            "sent",
            "HTTP {code}"
        );
    }
}

#[pg_test(schema = "tests")]
fn record_attempt_5xx_retries_after_the_first_backoff_step() {
    let e = endpoint("");
    let d = enqueue(e);
    assert_eq!(attempt(d, "500, 30"), "retry");
    assert_eq!(
        delivery::<String>(
            d,
            "format('%s|%s|%s|%s|%s', status, attempt_count, last_status_code, last_error, locked_until)"
        ),
        "retry|1|500|HTTP 500|"
    );
    assert_delay(d, 5.0); // the first step of the default retry_schedule
    assert_eq!(attempts_of(d), vec!["1:500:30:HTTP 500".to_owned()]);
    assert_eq!(
        health::<String>(
            e,
            "format('%s|%s|%s', failed_deliveries, consecutive_failures, health_status)"
        ),
        "1|1|degraded"
    );
    // The error text given is kept as is.
    let d = enqueue(e);
    assert_eq!(attempt(d, "503, 30, 'upstream down'"), "retry");
    assert_eq!(delivery::<String>(d, "last_error"), "upstream down");
    assert_eq!(attempts_of(d), vec!["1:503:30:upstream down".to_owned()]);
}

#[pg_test(schema = "tests")]
fn record_attempt_retryable_statuses() {
    let e = endpoint("");
    for result in [
        "NULL, NULL, 'connection refused'",
        "408, 5",
        "429, 5",
        "502, 5",
        "599, 5",
    ] {
        let d = enqueue(e);
        assert_eq!(attempt(d, result), "retry", "{result}");
        assert!(delay_s(d) > 0.0, "{result}");
    }
    let network =
        one::<i64>("SELECT id FROM webhook_outbox.deliveries WHERE last_status_code IS NULL");
    assert_eq!(
        delivery::<String>(network, "last_error"),
        "connection refused"
    );
    assert_eq!(
        attempts_of(network),
        vec!["1:::connection refused".to_owned()]
    );
}

#[pg_test(schema = "tests")]
fn record_attempt_permanent_statuses_are_dead() {
    // Six failures in a row would open the circuit and stop the claims.
    run("SET LOCAL webhook_outbox.circuit_failure_threshold = 100");
    let e = endpoint("");
    for code in [400, 401, 404, 301, 100] {
        let d = enqueue(e);
        assert_eq!(attempt(d, &format!("{code}, 5")), "dead", "HTTP {code}");
        assert!(delivery::<bool>(
            d,
            "dead_at = now() AND sent_at IS NULL AND locked_until IS NULL"
        ));
        assert_eq!(delivery::<String>(d, "last_error"), format!("HTTP {code}"));
    }
}

#[pg_test(schema = "tests")]
fn record_attempt_is_dead_when_attempts_run_out() {
    let d = enqueue(endpoint("max_attempts => 3"));
    assert_eq!(attempt(d, "500, 1"), "retry");
    assert_eq!(attempt(d, "NULL, NULL, 'timeout'"), "retry");
    assert_eq!(attempt(d, "500, 1"), "dead");
    assert!(delivery::<bool>(
        d,
        "status = 'dead' AND attempt_count = 3 AND dead_at = now()"
    ));
    assert_eq!(
        attempts_of(d),
        vec!["1:500:1:HTTP 500", "2:::timeout", "3:500:1:HTTP 500"]
    );
    // A dead delivery is never claimed again.
    assert_eq!(claim(10), Vec::<i64>::new());
}

#[pg_test(schema = "tests")]
fn record_attempt_follows_the_retry_schedule() {
    // The original worker's schedule: 5 attempts, 5 s doubling.
    run("SET LOCAL webhook_outbox.retry_schedule = '5s,10s,20s,40s'");
    let d = enqueue(endpoint(""));
    assert_eq!(
        delivery::<i32>(d, "max_attempts"),
        5,
        "one more than the steps"
    );
    for (n, expected_s) in [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0)] {
        assert_eq!(attempt(d, "500, 1"), "retry", "attempt {n}");
        assert_eq!(delivery::<i32>(d, "attempt_count"), n);
        assert_delay(d, expected_s);
    }
    assert_eq!(attempt(d, "500, 1"), "dead");
}

/// The default keeps retrying through an outage of a day: 8 attempts, the
/// last 27.6 hours after the first.
#[pg_test(schema = "tests")]
fn default_retry_schedule_outlasts_a_day() {
    // Each attempt is claimed: keep the circuit from opening meanwhile.
    run("SET LOCAL webhook_outbox.circuit_failure_threshold = 100");
    let d = enqueue(endpoint(""));
    assert_eq!(delivery::<i32>(d, "max_attempts"), 8);
    let mut total = 0.0;
    for expected_s in [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0] {
        assert_eq!(attempt(d, "503, 1"), "retry");
        assert_delay(d, expected_s);
        total += delay_s(d);
    }
    assert!(total >= 86_400.0, "{total} s");
    assert_eq!(attempt(d, "503, 1"), "dead");
}

#[pg_test(schema = "tests")]
fn endpoint_retry_schedule_overrides_the_setting() {
    run("SET LOCAL webhook_outbox.circuit_failure_threshold = 100");
    let e = endpoint("retry_schedule => '1m, 2m'");
    assert_eq!(
        one::<String>(&format!(
            "SELECT retry_schedule::text FROM webhook_outbox.endpoints WHERE id = {e}"
        )),
        "{00:01:00,00:02:00}"
    );
    let d = enqueue(e);
    assert_eq!(delivery::<i32>(d, "max_attempts"), 3);
    assert_eq!(attempt(d, "500, 1"), "retry");
    assert_delay(d, 60.0);
    assert_eq!(attempt(d, "500, 1"), "retry");
    assert_delay(d, 120.0);
    assert_eq!(attempt(d, "500, 1"), "dead");
    // An explicit max_attempts wins over the steps; the last step repeats.
    run(&format!(
        "SELECT webhook_outbox.update_endpoint({e}, max_attempts => 4, retry_schedule => '30s')"
    ));
    let d = enqueue(e);
    assert_eq!(delivery::<i32>(d, "max_attempts"), 4);
    for _ in 0..3 {
        assert_eq!(attempt(d, "500, 1"), "retry");
        assert_delay(d, 30.0);
    }
    assert_eq!(attempt(d, "500, 1"), "dead");
    run(&format!(
        "SELECT webhook_outbox.update_endpoint({e}, reset => '{{retry_schedule,max_attempts}}')"
    ));
    assert_eq!(delivery::<i32>(enqueue(e), "max_attempts"), 8);
}

#[pg_test(schema = "tests")]
fn bad_retry_schedules_are_refused_with_what_to_fix() {
    for bad in ["", "5", "5x", "0s", "8d", "5s,,5m"] {
        assert_fails(
            &format!("SELECT webhook_outbox.create_endpoint('https://example.com/', retry_schedule => '{bad}')"),
            "22023",
            "",
        );
        assert_fails(
            &format!("SET webhook_outbox.retry_schedule = '{bad}'"),
            "22023",
            "invalid value for parameter \"webhook_outbox.retry_schedule\"",
        );
    }
    let e = endpoint("");
    assert_fails(
        &format!("SELECT webhook_outbox.update_endpoint({e}, retry_schedule => '1h', reset => '{{retry_schedule}}')"),
        "22023",
        "both given and reset",
    );
}

#[pg_test(schema = "tests")]
fn record_attempt_backoff_has_jitter() {
    let e = endpoint("");
    let ids: Vec<i64> = (0..10).map(|_| enqueue(e)).collect();
    assert_eq!(claim(10), ids);
    for d in &ids {
        assert_eq!(
            one::<String>(&format!(
                "SELECT webhook_outbox.record_attempt({d}, {}, 500, 1)",
                lease(*d)
            )),
            "retry"
        );
        assert_delay(*d, 5.0);
    }
    // Ten failures at once do not come back as one burst of retries.
    let distinct =
        one::<i64>("SELECT count(DISTINCT next_attempt_at) FROM webhook_outbox.deliveries");
    assert!(distinct > 1, "{distinct} distinct retry times");
}

#[pg_test(schema = "tests")]
fn record_attempt_honours_retry_after_up_to_the_cap() {
    let e = endpoint("");
    let d = enqueue(e);
    assert_eq!(attempt(d, "429, 5, NULL, '2 seconds'"), "retry");
    assert_eq!(delay_s(d), 2.0);
    // Capped by retry_after_max: one hour by default.
    assert_eq!(attempt(d, "503, 5, NULL, '2 hours'"), "retry");
    assert_eq!(delay_s(d), 3600.0);
    run("SET LOCAL webhook_outbox.retry_after_max = '10s'");
    assert_eq!(attempt(d, "503, 5, retry_after => '1 hour'"), "retry");
    assert_eq!(delay_s(d), 10.0);
    // On success, or with no attempts left, it does not matter.
    assert_eq!(
        attempt(enqueue(e), "200, 5, retry_after => '1 hour'"),
        "sent"
    );
    let last = enqueue(endpoint("max_attempts => 1"));
    assert_eq!(attempt(last, "429, 5, retry_after => '2 seconds'"), "dead");
}

#[pg_test(schema = "tests")]
fn record_attempt_rejects_bad_input() {
    let d = enqueue(endpoint(""));
    let record = |args: String| format!("SELECT webhook_outbox.record_attempt({args})");
    assert_fails(
        &record("-1, gen_random_uuid(), 200, 5".into()),
        "42704",
        "delivery -1 does not exist",
    );
    assert_fails(
        &record("NULL, gen_random_uuid(), 200, 5".into()),
        "22004",
        "delivery_id must not be NULL",
    );
    assert_fails(
        &record(format!("{d}, NULL, 200, 5")),
        "22004",
        "lease_token must not be NULL",
    );
    assert_fails(
        &record(format!("{d}, gen_random_uuid(), 200, 5")),
        "55000",
        &format!("delivery {d} is pending, not sending"),
    );
    assert_eq!(claim(1), vec![d]);
    let token = lease(d);
    assert_fails(
        &record(format!("{d}, {token}, 99, 5")),
        "22023",
        "status_code must be an HTTP status (100-599), got 99",
    );
    assert_fails(
        &record(format!("{d}, {token}, 600, 5")),
        "22023",
        "status_code must be an HTTP status (100-599), got 600",
    );
    assert_fails(
        &record(format!("{d}, {token}, 200, -1")),
        "22023",
        "response_time_ms must be >= 0, got -1",
    );
    assert_fails(
        &record(format!("{d}, {token}, 503, 5, NULL, '-1 second'")),
        "22023",
        "retry_after must not be negative",
    );
    // A settled delivery cannot be recorded twice.
    assert_eq!(
        one::<String>(&record(format!("{d}, {token}, 200, 5"))),
        "sent"
    );
    assert_fails(
        &record(format!("{d}, gen_random_uuid(), 200, 5")),
        "55000",
        &format!("delivery {d} is sent, not sending"),
    );
}

#[pg_test(schema = "tests")]
fn record_attempt_needs_the_current_lease_token() {
    let d = enqueue(endpoint(""));
    assert_eq!(claim(1), vec![d]);
    let first: pgrx::Uuid = delivery(d, "lease_token");
    let record = |token: String| {
        format!("SELECT webhook_outbox.record_attempt({d}, '{token}'::uuid, 200, 5)")
    };
    // A foreign token: refused, nothing written.
    assert_fails(
        &record("00000000-0000-0000-0000-000000000000".into()),
        "55000",
        &format!("delivery {d} is not leased under this lease_token"),
    );
    // The lease runs out and the delivery is claimed again: the first token is stale.
    update(
        "deliveries",
        d,
        "locked_until = now() - interval '1 second'",
    );
    assert_eq!(claim(1), vec![d]);
    let second: pgrx::Uuid = delivery(d, "lease_token");
    assert_ne!(first, second, "each claim takes a new token");
    assert_fails(
        &record(first.to_string()),
        "55000",
        &format!("delivery {d} is not leased under this lease_token"),
    );
    assert_eq!(
        delivery::<String>(d, "webhook_outbox.delivery_state(status, locked_until)"),
        "sending"
    );
    assert_eq!(delivery::<i32>(d, "attempt_count"), 2);
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.attempts WHERE delivery_id = {d}"
        )),
        0
    );
    // The current holder settles it, and the token is spent.
    assert_eq!(one::<String>(&record(second.to_string())), "sent");
    assert_fails(
        &record(second.to_string()),
        "55000",
        &format!("delivery {d} is sent, not sending"),
    );
}

#[pg_test(schema = "tests", error = "delivery -1 does not exist")]
fn record_attempt_unknown_delivery_is_an_error() {
    run("SELECT webhook_outbox.record_attempt(-1, gen_random_uuid(), 200, 5)");
}

#[pg_test(schema = "tests")]
fn record_attempt_stores_a_bounded_error_text() {
    let e = endpoint("");
    let d = enqueue(e);
    assert_eq!(attempt(d, "500, 5, error => repeat('é', 100000)"), "retry");
    for (table, filter) in [
        ("attempts", format!("delivery_id = {d}")),
        ("deliveries", format!("id = {d}")),
    ] {
        let column = if table == "attempts" {
            "error"
        } else {
            "last_error"
        };
        let bytes = one::<i32>(&format!(
            "SELECT octet_length({column}) FROM webhook_outbox.{table} WHERE {filter}"
        ));
        assert!(
            (1000..=1024).contains(&bytes),
            "{table}.{column}: {bytes} bytes"
        );
    }
    let health = health::<i32>(e, "octet_length(last_error)");
    assert!(
        (1000..=1024).contains(&health),
        "health_metrics.last_error: {health} bytes"
    );
}

/// The worker's settle and release, given a token that is not the
/// delivery's current lease, change nothing; given the current one, settle.
#[pg_test(schema = "tests")]
fn settle_and_release_change_only_the_current_lease() {
    use crate::settle::{self, AttemptResult};
    use webhook_outbox_core::dispatch::Ticket;
    let e = endpoint("");
    let d = enqueue(e);
    assert_eq!(claim(1), vec![d]);
    let current: pgrx::Uuid = delivery(d, "lease_token");
    let ticket = |lease: [u8; 16]| Ticket {
        delivery_id: d,
        endpoint_id: e,
        attempt_no: 1,
        max_attempts: 5,
        lease,
    };
    let result = |lease: [u8; 16]| AttemptResult {
        delivery_id: d,
        endpoint_id: e,
        attempt_no: 1,
        max_attempts: 5,
        lease,
        status_code: Some(200),
        duration_ms: Some(1),
        error: None,
        retry_after_ms: None,
        permanent: false,
        response_body: None,
        failure_class: None,
        remote_addr: None,
    };
    let write = |lease: [u8; 16]| {
        Spi::connect_mut(|c| settle::settle(c, &[result(lease)], settle::HealthLock::Wait, &[]))
            .unwrap()
    };
    let foreign = [7u8; 16];
    assert_eq!(write(foreign).stale, 1);
    Spi::connect_mut(|c| settle::release(c, &[(ticket(foreign), 0)])).unwrap();
    assert_eq!(
        delivery::<String>(d, "webhook_outbox.delivery_state(status, locked_until)"),
        "sending"
    );
    assert_eq!(
        delivery::<i32>(d, "attempt_count"),
        1,
        "a foreign release gives nothing back"
    );
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.attempts WHERE delivery_id = {d}"
        )),
        0
    );

    assert_eq!(write(*current.as_bytes()).statuses, vec![(d, "sent")]);
    // The same result again: the lease is over, nothing changes.
    assert_eq!(write(*current.as_bytes()).stale, 1);
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.attempts WHERE delivery_id = {d}"
        )),
        1
    );
    // A delivery never claimed carries the all-zero token, and no lease.
    let unclaimed = enqueue(e);
    let zero = Spi::connect_mut(|c| {
        let r = AttemptResult {
            delivery_id: unclaimed,
            ..result([0u8; 16])
        };
        settle::settle(c, &[r], settle::HealthLock::Wait, &[])
    })
    .unwrap();
    assert_eq!(zero.stale, 1);
    assert_eq!(delivery::<String>(unclaimed, "status"), "pending");
}

/// A lease that ran out without another claim: the delivery is due again
/// (operators see it pending, a claim may take it), yet the claim that holds
/// its token may still settle it: a slow success is kept, not sent twice.
#[pg_test(schema = "tests")]
fn an_expired_lease_is_due_again_but_its_holder_may_still_settle() {
    let d = enqueue(endpoint(""));
    assert_eq!(claim(1), vec![d]);
    let token: pgrx::Uuid = delivery(d, "lease_token");
    assert_eq!(
        delivery::<String>(d, "webhook_outbox.delivery_state(status, locked_until)"),
        "sending"
    );
    update(
        "deliveries",
        d,
        "locked_until = now() - interval '1 second'",
    );
    assert_eq!(
        delivery::<String>(d, "webhook_outbox.delivery_state(status, locked_until)"),
        "pending"
    );
    assert_eq!(
        one::<i64>("SELECT count FROM webhook_outbox.v_queue_status WHERE status = 'pending'"),
        1
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT webhook_outbox.record_attempt({d}, '{token}'::uuid, 200, 5)"
        )),
        "sent"
    );
    assert_eq!(claim(1), Vec::<i64>::new());
}

/// 410 Gone disables the endpoint (the Standard Webhooks spec asks it); its
/// deliveries wait, even one on its last attempt, and go once it is enabled.
#[pg_test(schema = "tests")]
fn record_attempt_410_disables_the_endpoint_and_its_rows_wait() {
    let e = endpoint("max_attempts => 1");
    let (d, other) = (enqueue(e), enqueue(e));
    make_due(d);
    assert_eq!(
        one::<String>(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM webhook_outbox.get_ready_deliveries(1)"
        ),
        d.to_string()
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT webhook_outbox.record_attempt({d}, {}, 410, 12)",
            lease(d)
        )),
        "retry"
    );
    assert_eq!(
        delivery::<String>(
            d,
            "format('%s|%s|%s', status, next_attempt_at <= now(), locked_until IS NULL)"
        ),
        "retry|t|t"
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s', enabled, disabled_reason) FROM webhook_outbox.v_degraded_webhooks WHERE webhook_id = {e}"
        )),
        "f|the receiver answered 410 Gone"
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s', operation, reason) FROM webhook_outbox.endpoint_changes
             WHERE endpoint_id = {e} ORDER BY id DESC LIMIT 1"
        )),
        "disable|the receiver answered 410 Gone"
    );
    assert!(claim(10).is_empty(), "nothing goes to a disabled endpoint");
    run(&format!("SELECT webhook_outbox.enable_endpoint({e})"));
    assert_eq!(claim(10), vec![d, other]);
}

#[pg_test(schema = "tests")]
fn an_endpoint_failing_for_days_is_disabled() {
    let e = endpoint("");
    run(&format!(
        "UPDATE webhook_outbox.health_metrics SET consecutive_failures = 40, failing_since = now() - interval '6 days'
         WHERE webhook_id = {e}"
    ));
    run("SET LOCAL webhook_outbox.circuit_failure_threshold = 1000");
    // auto_disable_after = 0: never.
    run("SET LOCAL webhook_outbox.auto_disable_after = 0");
    assert_eq!(attempt(enqueue(e), "503, 1"), "retry");
    assert!(one::<bool>(&format!(
        "SELECT enabled FROM webhook_outbox.endpoints WHERE id = {e}"
    )));
    // The default, 5 days, counted from the first failure since a success.
    run("SET LOCAL webhook_outbox.auto_disable_after = '5d'");
    assert_eq!(attempt(enqueue(e), "503, 1"), "retry");
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s', enabled, disabled_reason) FROM webhook_outbox.endpoints WHERE id = {e}"
        )),
        "f|failing for 6.0 days without a success (webhook_outbox.auto_disable_after)"
    );
    // A success ends the streak.
    let fresh = endpoint("");
    run(&format!(
        "UPDATE webhook_outbox.health_metrics SET failing_since = now() - interval '6 days' WHERE webhook_id = {fresh}"
    ));
    assert_eq!(attempt(enqueue(fresh), "200, 1"), "sent");
    assert_eq!(
        maybe::<String>(&format!(
            "SELECT failing_since::text FROM webhook_outbox.health_metrics WHERE webhook_id = {fresh}"
        )),
        None
    );
    assert!(one::<bool>(&format!(
        "SELECT enabled FROM webhook_outbox.endpoints WHERE id = {fresh}"
    ))); // Enabled again: a fresh count, so its next failure does not disable it at once.
    run(&format!("SELECT webhook_outbox.enable_endpoint({e})"));
    run(&format!(
        "SELECT webhook_outbox.update_webhook_health({e}, 503, 1)"
    ));
    assert!(one::<bool>(&format!(
        "SELECT enabled FROM webhook_outbox.endpoints WHERE id = {e}"
    )));
}
