//! backfill: NDJSON lines into the outbox, counted, routed and reported.

use super::{error_of, one, run};
use pgrx::prelude::*;

fn line(id: &str, event_type: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"{event_type}","request_id":"req-{id}","schema_version":1,"actor":{{"user_id":"u-{id}"}}}}"#
    )
}

fn endpoint(name: &str, types: &str) -> i64 {
    one(&format!(
        "SELECT webhook_outbox.create_endpoint('https://example.com/{name}', '{name}', {types})"
    ))
}

/// (processed, created, enqueued, duplicates, failed)
fn backfill(ndjson: &str, args: &str) -> (i64, i64, i64, i64, i64) {
    let t = Spi::connect_mut(|c| {
        c.update(
            &format!("SELECT processed, created, enqueued, duplicates, failed FROM webhook_outbox.backfill($1 {args})"),
            None,
            &[ndjson.into()],
        )
        .and_then(|t| {
            let t = t.first();
            Ok((t.get::<i64>(1)?, t.get::<i64>(2)?, t.get::<i64>(3)?, t.get::<i64>(4)?, t.get::<i64>(5)?))
        })
    })
    .unwrap();
    (
        t.0.unwrap(),
        t.1.unwrap(),
        t.2.unwrap(),
        t.3.unwrap(),
        t.4.unwrap(),
    )
}

#[pg_test(schema = "tests")]
fn backfill_counts_fan_out_and_failures() {
    let a = endpoint("a", "ARRAY['order.paid']");
    let b = endpoint("b", "NULL");
    let input = [
        line("e1", "order.paid"),
        String::new(),
        r#"{"event_id":"e2","event_type":"user.created","request_id":"r2","schema_version":"1.0","actor":{"user_id":42}}"#.to_owned(),
        line("e1", "order.paid"),
        "not json".to_owned(),
        r#"{"event_id":"e3","event_type":"x","request_id":"r3","schema_version":1}"#.to_owned(),
        "   ".to_owned(),
    ]
    .join("\n");
    // e1 → a and b, e2 → b; the second e1 is a duplicate; lines 5 and 6 fail.
    assert_eq!(backfill(&input, ""), (5, 2, 3, 1, 2));
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.deliveries WHERE endpoint_id = {a}"
        )),
        1
    );
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.deliveries WHERE endpoint_id = {b}"
        )),
        2
    );
    let (subject, payload_ok) = Spi::get_two::<String, bool>(
        "SELECT subject_id, payload = '{\"event_id\":\"e2\",\"event_type\":\"user.created\",\"request_id\":\"r2\",\"schema_version\":\"1.0\",\"actor\":{\"user_id\":42}}'::jsonb
         FROM webhook_outbox.deliveries WHERE event_id = 'e2'",
    )
    .unwrap();
    assert_eq!((subject.as_deref(), payload_ok), (Some("42"), Some(true)));
    assert_eq!(one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'pending' AND max_attempts = 8"), 3);
    let errors = Spi::get_one::<String>(
        "SELECT string_agg(line_no || ': ' || reason, '; ' ORDER BY line_no) FROM webhook_outbox.backfill_errors
         WHERE run_id = (SELECT max(id) FROM webhook_outbox.backfill_runs)",
    )
    .unwrap()
    .unwrap();
    assert!(errors.starts_with("5: not valid JSON"), "{errors}");
    assert!(errors.contains("6: missing actor.user_id"), "{errors}");
    let run = Spi::get_two::<i64, bool>(
        "SELECT processed, finished_at IS NOT NULL AND NOT dry_run AND run_by = session_user
         FROM webhook_outbox.backfill_runs ORDER BY id DESC LIMIT 1",
    )
    .unwrap();
    assert_eq!(run, (Some(5), Some(true)));

    // The same file again creates nothing.
    assert_eq!(backfill(&input, ""), (5, 0, 0, 3, 2));
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries"),
        3
    );
}

#[pg_test(schema = "tests")]
fn backfill_dedupes_against_the_outbox_per_endpoint() {
    let a = endpoint("a", "NULL");
    endpoint("b", "NULL");
    Spi::run(&format!(
        "SELECT webhook_outbox.enqueue({a}, 'order.paid', '{{}}', 'e1')"
    ))
    .unwrap();
    let input = format!("{}\n{}", line("e1", "order.paid"), line("e2", "order.paid"));
    // Fan-out: e1 is new for b only, e2 for both.
    assert_eq!(backfill(&input, ""), (2, 2, 3, 0, 0));
    // One endpoint: both are there already.
    assert_eq!(
        backfill(&input, &format!(", endpoint_id => {a}")),
        (2, 0, 0, 2, 0)
    );
    // The enqueued payload was not replaced.
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE payload = '{}'"),
        1
    );
}

#[pg_test(schema = "tests")]
fn backfill_dry_run_counts_like_the_real_run_and_writes_nothing() {
    endpoint("a", "ARRAY['order.paid']");
    endpoint("b", "NULL");
    Spi::run("SELECT webhook_outbox.emit('order.paid', '{}', 'e1')").unwrap();
    super::route();
    let input = [
        line("e1", "order.paid"),
        line("e2", "user.created"),
        line("e2", "x"),
        "{".to_owned(),
    ]
    .join("\n");
    let before = one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries");
    let dry = backfill(&input, ", dry_run => true");
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries"),
        before
    );
    assert_eq!(dry, backfill(&input, ""));
    assert_eq!(dry, (4, 1, 1, 2, 1));
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.backfill_runs WHERE dry_run"),
        1
    );
}

#[pg_test(schema = "tests")]
fn backfill_to_one_endpoint_ignores_subscriptions_and_sets_max_attempts() {
    let a = endpoint("a", "ARRAY['order.paid']");
    let input = format!(
        "{}\n{}",
        line("e1", "user.created"),
        line("e2", "order.paid")
    );
    assert_eq!(
        backfill(
            &input,
            &format!(", endpoint_id => {a}, max_attempts => 3, progress_every => 1")
        ),
        (2, 2, 2, 0, 0)
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE max_attempts = 3"),
        2
    );
}

#[pg_test(schema = "tests")]
fn backfill_reports_lines_no_endpoint_wants() {
    endpoint("a", "ARRAY['order.paid']");
    Spi::run("UPDATE webhook_outbox.endpoints SET enabled = false WHERE name = 'a'").unwrap();
    assert_eq!(backfill(&line("e1", "order.paid"), ""), (1, 0, 0, 0, 1));
    let reason = Spi::get_one::<String>("SELECT reason FROM webhook_outbox.backfill_errors")
        .unwrap()
        .unwrap();
    assert_eq!(
        reason,
        "no enabled endpoint subscribes to event_type 'order.paid'"
    );
}

#[pg_test(schema = "tests")]
fn backfill_follows_mode_and_max_payload_bytes() {
    endpoint("a", "NULL");
    Spi::run("SET LOCAL webhook_outbox.mode = 'shadow'").unwrap();
    assert_eq!(backfill(&line("e1", "t"), ""), (1, 1, 1, 0, 0));
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'shadow'"),
        1
    );
    Spi::run("SET LOCAL webhook_outbox.mode = 'off'").unwrap();
    assert_eq!(
        backfill(&line("e2", "t"), ", dry_run => true"),
        (1, 1, 1, 0, 0)
    );
    Spi::run("SET LOCAL webhook_outbox.mode = 'on'").unwrap();
    Spi::run("SET LOCAL webhook_outbox.max_payload_bytes = 50").unwrap();
    assert_eq!(backfill(&line("e3", "t"), ""), (1, 0, 0, 0, 1));
}

#[pg_test(
    schema = "tests",
    error = "webhook_outbox.mode is off: backfill would record nothing"
)]
fn backfill_refuses_mode_off() {
    Spi::run("SET LOCAL webhook_outbox.mode = 'off'").unwrap();
    backfill(&line("e1", "t"), "");
}

#[pg_test(schema = "tests", error = "ndjson must not be NULL")]
fn backfill_rejects_null_input() {
    Spi::run("SELECT webhook_outbox.backfill(NULL)").unwrap();
}

#[pg_test(schema = "tests", error = "endpoint 999 does not exist")]
fn backfill_rejects_an_unknown_endpoint() {
    backfill("", ", endpoint_id => 999");
}

#[pg_test(
    schema = "tests",
    error = "max_attempts must be between 1 and 100, got 0"
)]
fn backfill_rejects_bad_max_attempts() {
    backfill("", ", max_attempts => 0");
}

#[pg_test(
    schema = "tests",
    error = "progress_every must be 0 (no progress) or more, got -1"
)]
fn backfill_rejects_negative_progress() {
    backfill("", ", progress_every => -1");
}

/// The payload limit means one thing for every entry point: the bytes of the
/// payload as jsonb prints it (the request body), not of the line as written.
#[pg_test(schema = "tests")]
fn backfill_measures_payloads_as_emit_does() {
    endpoint("a", "NULL");
    let compact = line("e1", "t");
    let size = one::<i32>(&format!("SELECT octet_length('{compact}'::jsonb::text)"));
    run(&format!(
        "SET LOCAL webhook_outbox.max_payload_bytes = {size}"
    ));
    // Written with spaces, the line is over the limit; stored, it is the same payload.
    let padded = compact.replace(':', " :     ").replace(',', " ,     ");
    assert!(padded.len() > size as usize, "{} <= {size}", padded.len());
    assert_eq!(backfill(&padded, ""), (1, 1, 1, 0, 0));

    run(&format!(
        "SET LOCAL webhook_outbox.max_payload_bytes = {}",
        size - 1
    ));
    let too_big = format!(
        "payload of {size} bytes exceeds webhook_outbox.max_payload_bytes ({})",
        size - 1
    );
    assert_eq!(backfill(&line("e2", "t"), ""), (1, 0, 0, 0, 1));
    assert_eq!(
        one::<String>(
            "SELECT reason FROM webhook_outbox.backfill_errors
             WHERE run_id = (SELECT max(id) FROM webhook_outbox.backfill_runs)"
        ),
        too_big
    );
    // emit() refuses the same payload with the same words.
    let e3 = line("e3", "t");
    assert_eq!(
        error_of(&format!("SELECT webhook_outbox.emit('t', '{e3}')")),
        ("54000".to_owned(), too_big)
    );
}

/// A line whose id came earlier is a duplicate only if that earlier line was
/// queued: behind a refused one, it is tried in its place.
#[pg_test(schema = "tests")]
fn backfill_tries_a_repeated_id_when_the_first_line_was_refused() {
    endpoint("a", "NULL");
    let fits = line("e1", "t");
    let size = one::<i32>(&format!("SELECT octet_length('{fits}'::jsonb::text)"));
    run(&format!(
        "SET LOCAL webhook_outbox.max_payload_bytes = {size}"
    ));
    let too_big = fits.replacen('{', r#"{"padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","#, 1);
    let big = one::<i32>(&format!("SELECT octet_length('{too_big}'::jsonb::text)"));
    let input = [too_big, fits.clone(), fits].join("\n");
    // Line 1 refused, line 2 queued in its place, line 3 a duplicate of line 2.
    assert_eq!(backfill(&input, ""), (3, 1, 1, 1, 1));
    assert_eq!(
        one::<String>(
            "SELECT line_no || ': ' || reason FROM webhook_outbox.backfill_errors
             WHERE run_id = (SELECT max(id) FROM webhook_outbox.backfill_runs)"
        ),
        format!("1: payload of {big} bytes exceeds webhook_outbox.max_payload_bytes ({size})")
    );
}
