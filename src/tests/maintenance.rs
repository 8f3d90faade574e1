//! Operator functions: requeue_dead, cleanup, run_once. cleanup deletes in
//! batches; cleanup_in_batches() COMMITs, which a test transaction cannot:
//! bench/cleanup.sh runs it.

use super::{assert_fails, attempt, column, delivery, endpoint, enqueue, one, run, update};
use pgrx::prelude::*;

fn statuses() -> Vec<String> {
    column("SELECT status FROM webhook_outbox.deliveries ORDER BY id")
}

/// A delivery to `endpoint` that died of a 404 `hours_ago`.
fn dead(endpoint: i64, hours_ago: i32) -> i64 {
    let d = enqueue(endpoint);
    assert_eq!(attempt(d, "404, 7"), "dead");
    update(
        "deliveries",
        d,
        &format!("dead_at = now() - interval '{hours_ago} hours'"),
    );
    d
}

#[pg_test(schema = "tests")]
fn requeue_dead_resets_dead_deliveries() {
    let e = endpoint("");
    let d = one::<i64>(&format!(
        "SELECT webhook_outbox.enqueue({e}, 'order.paid', '{{\"n\": 7}}', 'evt-7')"
    ));
    update("deliveries", d, "max_attempts = 2");
    assert_eq!(attempt(d, "500, 3"), "retry");
    assert_eq!(attempt(d, "503, 3"), "dead");
    assert_eq!(one::<i64>("SELECT webhook_outbox.requeue_dead()"), 1);
    assert_eq!(
        delivery::<String>(
            d,
            "format('%s|%s|%s|%s|%s|%s|%s|%s|%s', status, attempt_count, last_status_code, last_error, dead_at,
                    locked_until, next_attempt_at = now(), event_id, payload)"
        ),
        r#"pending|0|||||t|evt-7|{"n": 7}"#
    );
    // It is delivered again, with its full number of attempts.
    assert_eq!(attempt(d, "500, 3"), "retry");
    assert_eq!(attempt(d, "200, 3"), "sent");
    assert_eq!(one::<i64>("SELECT webhook_outbox.requeue_dead()"), 0);
}

#[pg_test(schema = "tests")]
fn requeue_dead_limits_rows_oldest_first() {
    let e = endpoint("");
    let (newest, oldest, middle) = (dead(e, 1), dead(e, 3), dead(e, 2));
    assert_eq!(one::<i64>("SELECT webhook_outbox.requeue_dead(2)"), 2);
    assert_eq!(delivery::<String>(oldest, "status"), "pending");
    assert_eq!(delivery::<String>(middle, "status"), "pending");
    assert_eq!(delivery::<String>(newest, "status"), "dead");
}

#[pg_test(schema = "tests")]
fn requeue_dead_filters_by_endpoint() {
    let (a, b) = (endpoint(""), endpoint(""));
    let (da, db) = (dead(a, 1), dead(b, 1));
    assert_eq!(
        one::<i64>(&format!(
            "SELECT webhook_outbox.requeue_dead(endpoint_id => {b})"
        )),
        1
    );
    assert_eq!(delivery::<String>(da, "status"), "dead");
    assert_eq!(delivery::<String>(db, "status"), "pending");
    assert_eq!(
        one::<i64>("SELECT webhook_outbox.requeue_dead(endpoint_id => -1)"),
        0
    );
}

#[pg_test(schema = "tests")]
fn requeue_dead_dry_run_only_counts() {
    let e = endpoint("");
    for h in 1..=3 {
        dead(e, h);
    }
    enqueue(e); // pending: not counted
    assert_eq!(
        one::<i64>("SELECT webhook_outbox.requeue_dead(dry_run => true)"),
        3
    );
    assert_eq!(
        one::<i64>("SELECT webhook_outbox.requeue_dead(2, dry_run => true)"),
        2
    );
    assert_eq!(statuses(), ["dead", "dead", "dead", "pending"]);
}

#[pg_test(schema = "tests")]
fn requeue_dead_rejects_bad_max_rows() {
    assert_fails(
        "SELECT webhook_outbox.requeue_dead(0)",
        "22023",
        "max_rows must be at least 1, got 0",
    );
    assert_fails(
        "SELECT webhook_outbox.requeue_dead(-1)",
        "22023",
        "max_rows must be at least 1, got -1",
    );
    assert_fails(
        "SELECT webhook_outbox.requeue_dead(NULL)",
        "22023",
        "max_rows must be at least 1, got NULL",
    );
}

/// One delivery per (status, age); returns their ids in the order given.
/// `age` moves the column cleanup ages the status by (sent_at, created_at,
/// dead_at) into the past.
fn aged(endpoint: i64, rows: &[(&str, &str)]) -> Vec<i64> {
    rows.iter()
        .map(|(status, age)| {
            let d = enqueue(endpoint);
            let column = match *status {
                "sent" => "sent_at",
                "dead" => "dead_at",
                _ => "created_at",
            };
            update("deliveries", d, &format!("status = '{status}', {column} = now() - interval '{age}'"));
            run(&format!(
                "INSERT INTO webhook_outbox.attempts (delivery_id, endpoint_id, attempt_no, status_code)
                 VALUES ({d}, {endpoint}, 1, 200)"
            ));
            d
        })
        .collect()
}

const AGED: &[(&str, &str)] = &[
    ("sent", "15 days"),
    ("sent", "13 days"),
    ("shadow", "8 days"),
    ("shadow", "6 days"),
    ("dead", "31 days"),
    ("dead", "29 days"),
    ("pending", "100 days"),
    ("retry", "100 days"),
];

fn cleanup(args: &str) -> Vec<String> {
    column(&format!(
        "SELECT format('%s=%s', status, deleted) FROM webhook_outbox.cleanup({args})"
    ))
}

fn remaining() -> Vec<i64> {
    column("SELECT id FROM webhook_outbox.deliveries ORDER BY id")
}

#[pg_test(schema = "tests")]
fn cleanup_deletes_old_finished_deliveries_and_their_attempts() {
    let e = endpoint("");
    let ids = aged(e, AGED);
    assert_eq!(
        cleanup(""),
        ["sent=1", "shadow=1", "dead=1", "operational_events=0"]
    );
    let kept = vec![ids[1], ids[3], ids[5], ids[6], ids[7]];
    assert_eq!(remaining(), kept);
    assert_eq!(
        column::<i64>("SELECT delivery_id FROM webhook_outbox.attempts ORDER BY delivery_id"),
        kept
    );
    assert_eq!(
        cleanup(""),
        ["sent=0", "shadow=0", "dead=0", "operational_events=0"]
    );
}

#[pg_test(schema = "tests")]
fn cleanup_uses_the_given_ages() {
    let e = endpoint("");
    let ids = aged(e, AGED);
    assert_eq!(
        cleanup("'1 day', '100 years', '1 day'"),
        ["sent=2", "shadow=0", "dead=2", "operational_events=0"]
    );
    assert_eq!(remaining(), vec![ids[2], ids[3], ids[6], ids[7]]);
    assert_eq!(
        cleanup("shadow_older_than => '1 day'"),
        ["sent=0", "shadow=2", "dead=0", "operational_events=0"]
    );
    assert_eq!(remaining(), vec![ids[6], ids[7]]);
}

#[pg_test(schema = "tests")]
fn cleanup_dry_run_only_counts() {
    let e = endpoint("");
    aged(e, AGED);
    assert_eq!(
        cleanup("dry_run => true"),
        ["sent=1", "shadow=1", "dead=1", "operational_events=0"]
    );
    assert_eq!(remaining().len(), AGED.len());
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.attempts"),
        AGED.len() as i64
    );
}

#[pg_test(schema = "tests")]
fn cleanup_rejects_null_ages() {
    assert_fails(
        "SELECT * FROM webhook_outbox.cleanup(NULL)",
        "22004",
        "cleanup needs an age for each status",
    );
    assert_fails(
        "SELECT * FROM webhook_outbox.cleanup(dead_older_than => NULL)",
        "22004",
        "cleanup needs an age for each status",
    );
    assert_fails(
        "SELECT * FROM webhook_outbox.cleanup(events_older_than => NULL)",
        "22004",
        "cleanup needs an age for each status and for the operational events",
    );
}

/// Operational events age out like deliveries, through windows of ids.
#[pg_test(schema = "tests")]
fn cleanup_deletes_old_operational_events() {
    let e = endpoint("");
    run(&format!(
        "INSERT INTO webhook_outbox.operational_events (event_type, endpoint_id, occurred_at)
         SELECT 'circuit.opened', {e}, now() - interval '40 days' + i * interval '1 second'
         FROM generate_series(1, 12000) i ORDER BY i;
         INSERT INTO webhook_outbox.operational_events (event_type, endpoint_id, occurred_at)
         VALUES ('circuit.closed', {e}, now() - interval '20 days'), ('endpoint.failing', {e}, now())"
    ));
    let events = |args: &str| {
        one::<i64>(&format!(
            "SELECT deleted FROM webhook_outbox.cleanup({args}) WHERE status = 'operational_events'"
        ))
    };
    assert_eq!(events("dry_run => true"), 12000);
    // One window deletes the old events among its ids, and no others.
    let first = one::<i64>("SELECT min(id) FROM webhook_outbox.operational_events");
    assert_eq!(
        one::<i64>(&format!(
            "SELECT webhook_outbox._cleanup_batch('operational_events', now() - interval '30 days', {first}, 5000)"
        )),
        5000
    );
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.operational_events WHERE id < {first} + 5000"
        )),
        0
    );
    assert_eq!(events(""), 7000);
    assert_eq!(
        one::<String>(
            "SELECT string_agg(event_type, ',' ORDER BY occurred_at) FROM webhook_outbox.operational_events"
        ),
        "circuit.closed,endpoint.failing"
    );
    assert_eq!(events("events_older_than => '1 day'"), 1);
}

#[pg_test(schema = "tests")]
fn run_once_with_nothing_due_returns_zero() {
    assert_eq!(one::<i64>("SELECT webhook_outbox.run_once()"), 0);
    let e = endpoint("");
    let d = enqueue(e);
    update(
        "deliveries",
        d,
        "next_attempt_at = now() + interval '1 hour'",
    );
    assert_eq!(one::<i64>("SELECT webhook_outbox.run_once(10)"), 0);
    assert_eq!(
        delivery::<String>(d, "format('%s|%s', status, attempt_count)"),
        "pending|0"
    );
}

/// No HTTP here: the only target is refused by the SSRF guard (loopback is
/// not in webhook_outbox.allowed_cidrs), which settles the delivery as dead.
#[pg_test(schema = "tests")]
fn run_once_settles_a_refused_target() {
    let e = one::<i64>("SELECT webhook_outbox.create_endpoint('https://127.0.0.1:1/hook')");
    let d = enqueue(e);
    assert_eq!(one::<i64>("SELECT webhook_outbox.run_once()"), 1);
    assert_eq!(
        delivery::<String>(d, "format('%s|%s', status, attempt_count)"),
        "dead|1"
    );
    let error = delivery::<String>(d, "last_error");
    assert!(
        error.contains("refused by SSRF guard: 127.0.0.1 is"),
        "{error}"
    );
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.attempts WHERE delivery_id = {d}"
        )),
        1
    );
    assert_eq!(super::health::<i64>(e, "failed_deliveries"), 1);
}

#[pg_test(schema = "tests")]
fn run_once_sends_nothing_in_shadow_or_off_mode() {
    let d = enqueue(one::<i64>(
        "SELECT webhook_outbox.create_endpoint('https://127.0.0.1:1/hook')",
    ));
    for mode in ["shadow", "off"] {
        run(&format!("SET LOCAL webhook_outbox.mode = '{mode}'"));
        assert_eq!(
            one::<i64>("SELECT webhook_outbox.run_once()"),
            0,
            "mode {mode}"
        );
    }
    assert_eq!(
        delivery::<String>(d, "format('%s|%s', status, attempt_count)"),
        "pending|0"
    );
}

#[pg_test(schema = "tests")]
fn run_once_rejects_bad_max_rows() {
    assert_fails(
        "SELECT webhook_outbox.run_once(0)",
        "22023",
        "max_rows must be at least 1, got 0",
    );
    assert_fails(
        "SELECT webhook_outbox.run_once(-3)",
        "22023",
        "max_rows must be at least 1, got -3",
    );
}

/// n deliveries of `status` for endpoint a, aged from `age` back one second each.
fn insert_old(a: i64, n: i64, status: &str, column: &str, age: &str) {
    Spi::run(&format!(
        "INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, status, max_attempts, {column})
         SELECT {a}, '{status}-' || i, 't', '{{}}', '{status}', 5, now() - interval '{age}' - i * interval '1 second'
         FROM generate_series(1, {n}) i"
    ))
    .unwrap();
}

#[pg_test(schema = "tests")]
fn cleanup_deletes_in_batches_with_attempts() {
    let a = one::<i64>("SELECT webhook_outbox.create_endpoint('https://example.com/a')");
    insert_old(a, 25_000, "sent", "sent_at", "20 days");
    insert_old(a, 3, "dead", "dead_at", "40 days");
    Spi::run(&format!(
        "SELECT webhook_outbox.enqueue({a}, 't', '{{}}', 'recent');
         UPDATE webhook_outbox.deliveries SET status = 'sent', sent_at = now() WHERE event_id = 'recent';
         INSERT INTO webhook_outbox.attempts (delivery_id, endpoint_id, attempt_no)
         SELECT id, endpoint_id, 1 FROM webhook_outbox.deliveries"
    ))
    .unwrap();
    let counts = "SELECT string_agg(status || '=' || deleted, ',') FROM webhook_outbox.cleanup";
    assert_eq!(
        one::<String>(&format!("{counts}(dry_run => true)")),
        "sent=25000,shadow=0,dead=3,operational_events=0"
    );
    // 25,000 sent rows take three statements of at most 10,000.
    assert_eq!(
        one::<String>(&format!("{counts}()")),
        "sent=25000,shadow=0,dead=3,operational_events=0"
    );
    assert_eq!(
        one::<String>("SELECT string_agg(event_id, ',') FROM webhook_outbox.deliveries"),
        "recent"
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.attempts"),
        1
    );
}

#[pg_test(schema = "tests")]
fn cleanup_works_through_id_windows() {
    let a = one::<i64>("SELECT webhook_outbox.create_endpoint('https://example.com/a')");
    // 30 sent rows, every third one recent: 20 to delete.
    Spi::run(&format!(
        "INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, status, max_attempts, sent_at)
         SELECT {a}, 'e' || i, 't', '{{}}', 'sent', 5, CASE WHEN i % 3 = 0 THEN now() ELSE now() - interval '30 days' END
         FROM generate_series(1, 30) i ORDER BY i"
    ))
    .unwrap();
    let cutoff = "now() - interval '14 days'";
    let (first, last) = Spi::get_two::<i64, i64>(&format!(
        "SELECT first_id, last_id FROM webhook_outbox._cleanup_range('sent', {cutoff})"
    ))
    .unwrap();
    let (first, last) = (first.unwrap(), last.unwrap());
    assert_eq!(
        first,
        one::<i64>("SELECT id FROM webhook_outbox.deliveries WHERE event_id = 'e1'")
    );
    assert_eq!(
        last,
        one::<i64>("SELECT id FROM webhook_outbox.deliveries WHERE event_id = 'e29'")
    );
    // Ids may have gaps (tests share the sequence): expect per window what is old in it.
    let windows: Vec<i64> = (first..=last).step_by(10).collect();
    let expected: Vec<i64> = windows
        .iter()
        .map(|from| {
            one::<i64>(&format!(
                "SELECT count(*) FROM webhook_outbox.deliveries WHERE id >= {from} AND id < {from} + 10 AND sent_at < {cutoff}"
            ))
        })
        .collect();
    let deleted: Vec<i64> = windows
        .iter()
        .map(|from| {
            one::<i64>(&format!(
                "SELECT webhook_outbox._cleanup_batch('sent', {cutoff}, {from}, 10)"
            ))
        })
        .collect();
    assert_eq!(deleted, expected);
    assert_eq!(deleted.iter().sum::<i64>(), 20);
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.deliveries WHERE sent_at < {cutoff}"
        )),
        0
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries"),
        10
    );
    // Nothing left: no range.
    assert!(Spi::get_one::<i64>(&format!(
        "SELECT first_id FROM webhook_outbox._cleanup_range('sent', {cutoff})"
    ))
    .unwrap()
    .is_none());
}
