//! `#[pg_test]`s of replay_dead_letters and requeue_dead (sql/replay.sql).

use super::one;
use pgrx::prelude::*;

/// Endpoints a and b; dead d1 (a, x, 3 days ago), d2 (a, y, 1 day), d3 (b, x, 2 days);
/// sent s1 (b, x); pending p1 (a, x).
fn setup() -> (i64, i64) {
    let a = one::<i64>("SELECT webhook_outbox.create_endpoint('https://example.com/a', 'a')");
    let b = one::<i64>("SELECT webhook_outbox.create_endpoint('https://example.com/b', 'b')");
    Spi::run(&format!(
        r#"SELECT webhook_outbox.enqueue({a}, 'x', '{{"n": 1}}', 'd1'), webhook_outbox.enqueue({a}, 'y', '{{"n": 2}}', 'd2'),
                  webhook_outbox.enqueue({b}, 'x', '{{"n": 3}}', 'd3'), webhook_outbox.enqueue({b}, 'x', '{{"n": 4}}', 's1'),
                  webhook_outbox.enqueue({a}, 'x', '{{"n": 5}}', 'p1');
           UPDATE webhook_outbox.deliveries d
           SET status = 'dead', dead_at = now() - v.age, attempt_count = 5, last_status_code = 500, last_error = 'boom'
           FROM (VALUES ('d1', interval '3 days'), ('d2', interval '1 day'), ('d3', interval '2 days')) v(event_id, age)
           WHERE d.event_id = v.event_id;
           UPDATE webhook_outbox.deliveries SET status = 'sent', sent_at = now() - interval '1 day', attempt_count = 1
           WHERE event_id = 's1';"#
    ))
    .unwrap();
    (a, b)
}

/// The event ids a replay picked, in its order, and its count.
fn replayed(args: &str) -> (String, i64) {
    let (ids, n) = Spi::get_two::<String, i64>(&format!(
        "SELECT (SELECT coalesce(string_agg(d.event_id, ',' ORDER BY u.o), '')
                 FROM unnest(r.delivery_ids) WITH ORDINALITY u(id, o)
                 JOIN webhook_outbox.deliveries d ON d.id = u.id),
                r.requeued
         FROM webhook_outbox.replay_dead_letters({args}) r"
    ))
    .unwrap();
    (ids.unwrap(), n.unwrap())
}

#[pg_test(schema = "tests")]
fn replay_filters_oldest_first_in_dry_runs() {
    let (a, _) = setup();
    assert_eq!(replayed("dry_run => true"), ("d1,d3,d2".to_owned(), 3));
    assert_eq!(
        replayed(&format!("endpoint_id => {a}, dry_run => true")),
        ("d1,d2".to_owned(), 2)
    );
    assert_eq!(
        replayed("event_type => 'x', dry_run => true"),
        ("d1,d3".to_owned(), 2)
    );
    assert_eq!(
        replayed("since => now() - interval '60 hours', until => now() - interval '36 hours', dry_run => true"),
        ("d3".to_owned(), 1)
    );
    assert_eq!(
        replayed("max_rows => 1, dry_run => true"),
        ("d1".to_owned(), 1)
    );
    assert_eq!(
        replayed("status => 'sent', dry_run => true"),
        ("s1".to_owned(), 1)
    );
    assert_eq!(
        replayed("event_type => 'nope', dry_run => true"),
        (String::new(), 0)
    );
    // Dry runs change nothing and leave no audit row.
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'dead'"),
        3
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.replay_log"),
        0
    );
    assert!(Spi::get_one::<i64>(
        "SELECT replay_id FROM webhook_outbox.replay_dead_letters(dry_run => true)"
    )
    .unwrap()
    .is_none());
}

#[pg_test(schema = "tests")]
fn replay_requeues_keeps_the_event_and_logs_it() {
    setup();
    let before = one::<String>("SELECT string_agg(event_id || payload::text, ';' ORDER BY id) FROM webhook_outbox.deliveries");
    assert_eq!(replayed("event_type => 'x'"), ("d1,d3".to_owned(), 2));
    assert_eq!(
        one::<String>("SELECT string_agg(event_id || payload::text, ';' ORDER BY id) FROM webhook_outbox.deliveries"),
        before
    );
    assert_eq!(
        one::<i64>(
            "SELECT count(*) FROM webhook_outbox.deliveries
             WHERE event_id IN ('d1', 'd3') AND status = 'pending' AND attempt_count = 0 AND next_attempt_at = now()
               AND last_status_code IS NULL AND last_error IS NULL AND dead_at IS NULL AND locked_until IS NULL"
        ),
        2
    );
    assert_eq!(
        one::<String>("SELECT status FROM webhook_outbox.deliveries WHERE event_id = 'd2'"),
        "dead"
    );
    let logged = one::<bool>(
        "SELECT replayed_by = session_user AND requeued = 2
                AND filters = '{\"endpoint_id\": null, \"event_type\": \"x\", \"since\": null, \"until\": null,
                                \"status\": \"dead\", \"max_rows\": 1000}'::jsonb
                AND delivery_ids = (SELECT array_agg(id ORDER BY event_id) FROM webhook_outbox.deliveries
                                    WHERE event_id IN ('d1', 'd3'))
         FROM webhook_outbox.replay_log",
    );
    assert!(logged);
}

#[pg_test(schema = "tests")]
fn replay_of_sent_deliveries_clears_sent_at() {
    setup();
    let (_, n) = replayed("status => 'sent'");
    assert_eq!(n, 1);
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE event_id = 's1' AND status = 'pending' AND sent_at IS NULL"),
        1
    );
}

#[pg_test(schema = "tests")]
fn requeue_dead_goes_through_replay() {
    let (a, _) = setup();
    assert_eq!(
        one::<i64>("SELECT webhook_outbox.requeue_dead(dry_run => true)"),
        3
    );
    assert_eq!(
        one::<i64>(&format!("SELECT webhook_outbox.requeue_dead(1, {a})")),
        1
    );
    assert_eq!(
        one::<String>("SELECT status FROM webhook_outbox.deliveries WHERE event_id = 'd1'"),
        "pending"
    );
    assert_eq!(
        one::<String>("SELECT filters->>'endpoint_id' || '/' || (filters->>'max_rows') FROM webhook_outbox.replay_log"),
        format!("{a}/1")
    );
}

#[pg_test(
    schema = "tests",
    error = "cannot replay deliveries with status 'pending'"
)]
fn replay_refuses_live_statuses() {
    Spi::run("SELECT webhook_outbox.replay_dead_letters(status => 'pending')").unwrap();
}

#[pg_test(schema = "tests", error = "max_rows must be at least 1, got 0")]
fn replay_refuses_a_zero_limit() {
    Spi::run("SELECT webhook_outbox.replay_dead_letters(max_rows => 0)").unwrap();
}

#[pg_test(
    schema = "tests",
    error = "since (2026-01-02 00:00:00+00) must be earlier than until (2026-01-01 00:00:00+00)"
)]
fn replay_refuses_an_empty_window() {
    Spi::run("SET LOCAL timezone = 'UTC'").unwrap();
    Spi::run(
        "SELECT webhook_outbox.replay_dead_letters(since => '2026-01-02', until => '2026-01-01')",
    )
    .unwrap();
}
