//! Putting events in: enqueue (one endpoint) and emit (fan-out), under each mode.

use super::{assert_fails, column, delivery, endpoint, enqueue, maybe, one, route, run, update};
use pgrx::prelude::*;

fn count(filter: &str) -> i64 {
    one(&format!(
        "SELECT count(*) FROM webhook_outbox.deliveries WHERE {filter}"
    ))
}

#[pg_test(schema = "tests")]
fn enqueue_creates_a_pending_delivery() {
    let e = endpoint("");
    let d = one::<i64>(&format!(
        "SELECT webhook_outbox.enqueue({e}, 'order.paid', '{{\"order\": 42}}', 'evt-1', 'customer-7')"
    ));
    assert_eq!(
        delivery::<String>(
            d,
            "format('%s|%s|%s|%s|%s|%s|%s|%s', endpoint_id, event_id, event_type, payload, subject_id, status,
                    attempt_count, next_attempt_at = now() AND locked_until IS NULL AND sent_at IS NULL)"
        ),
        format!("{e}|evt-1|order.paid|{{\"order\": 42}}|customer-7|pending|0|t")
    );
}

#[pg_test(schema = "tests")]
fn enqueue_takes_max_attempts_from_the_endpoint_or_the_guc() {
    let own = endpoint("max_attempts => 3");
    let default = endpoint("");
    assert_eq!(delivery::<i32>(enqueue(own), "max_attempts"), 3);
    // 0 (the default): one more than the retry schedule's steps.
    assert_eq!(delivery::<i32>(enqueue(default), "max_attempts"), 8);
    run("SET LOCAL webhook_outbox.retry_schedule = '1s,2s'");
    assert_eq!(delivery::<i32>(enqueue(default), "max_attempts"), 3);
    run("SET LOCAL webhook_outbox.max_attempts = 7");
    assert_eq!(delivery::<i32>(enqueue(default), "max_attempts"), 7);
    assert_eq!(delivery::<i32>(enqueue(own), "max_attempts"), 3);
}

#[pg_test(schema = "tests")]
fn enqueue_dedupes_on_endpoint_and_event_id() {
    let (a, b) = (endpoint(""), endpoint(""));
    let sql = |e: i64, payload: &str| {
        format!("SELECT webhook_outbox.enqueue({e}, 'order.paid', '{payload}', 'evt-1')")
    };
    let first = one::<i64>(&sql(a, r#"{"v": 1}"#));
    let again = one::<i64>(&sql(a, r#"{"v": 2}"#));
    assert_eq!(again, first);
    assert_eq!(count("true"), 1);
    // The first version wins: a retried enqueue never rewrites the event.
    assert_eq!(delivery::<String>(first, "payload::text"), r#"{"v": 1}"#);
    // The key is per endpoint.
    let other = one::<i64>(&sql(b, r#"{"v": 1}"#));
    assert_ne!(other, first);
    assert_eq!(count("event_id = 'evt-1'"), 2);
}

#[pg_test(schema = "tests")]
fn enqueue_generates_an_event_id() {
    let e = endpoint("");
    let (d1, d2) = (enqueue(e), enqueue(e));
    assert_ne!(d1, d2, "no event_id: no dedupe");
    let ids: Vec<String> = column(&format!(
        "SELECT event_id FROM webhook_outbox.deliveries WHERE id IN ({d1}, {d2})"
    ));
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        assert!(
            one::<bool>(&format!(
                "SELECT '{id}' ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-4[0-9a-f]{{3}}-[89ab][0-9a-f]{{3}}-[0-9a-f]{{12}}$'"
            )),
            "{id}"
        );
    }
}

#[pg_test(schema = "tests")]
fn enqueue_rejects_bad_input() {
    let e = endpoint("");
    let enqueue = |args: &str| format!("SELECT webhook_outbox.enqueue({args})");
    assert_fails(
        &enqueue("-1, 'order.paid', '{}'"),
        "42704",
        "endpoint -1 does not exist",
    );
    assert_fails(
        &enqueue("NULL, 'order.paid', '{}'"),
        "22004",
        "endpoint_id must not be NULL",
    );
    assert_fails(
        &enqueue(&format!("{e}, 'order.paid', NULL")),
        "22004",
        "payload must not be NULL",
    );
    assert_fails(
        &enqueue(&format!("{e}, '', '{{}}'")),
        "22023",
        "event_type must not be empty",
    );
    assert_fails(
        &enqueue(&format!("{e}, '  ', '{{}}'")),
        "22023",
        "event_type must not be empty",
    );
    assert_fails(
        &enqueue(&format!("{e}, NULL, '{{}}'")),
        "22023",
        "event_type must not be empty",
    );
    assert_eq!(count("true"), 0);
}

#[pg_test(schema = "tests", error = "endpoint -1 does not exist")]
fn enqueue_unknown_endpoint_is_an_error() {
    run("SELECT webhook_outbox.enqueue(-1, 'order.paid', '{}')");
}

#[pg_test(schema = "tests")]
fn enqueue_enforces_max_payload_bytes() {
    let e = endpoint("");
    // '{"a": "0123456789"}' is 19 bytes of JSON text.
    let sql =
        format!("SELECT webhook_outbox.enqueue({e}, 'order.paid', '{{\"a\": \"0123456789\"}}')");
    run("SET LOCAL webhook_outbox.max_payload_bytes = 19");
    one::<i64>(&sql);
    run("SET LOCAL webhook_outbox.max_payload_bytes = 18");
    assert_fails(
        &sql,
        "54000",
        "payload of 19 bytes exceeds webhook_outbox.max_payload_bytes (18)",
    );
    // The default is 256 kB.
    run("RESET webhook_outbox.max_payload_bytes");
    let big = |n: i32| {
        format!("SELECT webhook_outbox.enqueue({e}, 'order.paid', jsonb_build_object('a', repeat('x', {n})))")
    };
    one::<i64>(&big(256 * 1024 - 20));
    assert_fails(
        &big(256 * 1024),
        "54000",
        "exceeds webhook_outbox.max_payload_bytes (262144)",
    );
    assert_eq!(count("true"), 2);
}

#[pg_test(schema = "tests")]
fn enqueue_in_mode_off_creates_nothing() {
    let e = endpoint("");
    run("SET LOCAL webhook_outbox.mode = 'off'");
    assert_eq!(
        maybe::<i64>(&format!(
            "SELECT webhook_outbox.enqueue({e}, 'order.paid', '{{}}')"
        )),
        None
    );
    assert_eq!(count("true"), 0);
}

#[pg_test(schema = "tests")]
fn enqueue_in_mode_shadow_records_shadow_rows() {
    let e = endpoint("");
    run("SET LOCAL webhook_outbox.mode = 'shadow'");
    let d = enqueue(e);
    assert_eq!(delivery::<String>(d, "status"), "shadow");
}

/// Endpoints: all events, order.paid only, user.created only, disabled.
fn fan_out_endpoints() -> [i64; 4] {
    let all = endpoint("");
    let paid = endpoint("event_types => '{order.paid,order.refunded}'");
    let users = endpoint("event_types => '{user.created}'");
    let disabled = endpoint("");
    update("endpoints", disabled, "enabled = false");
    [all, paid, users, disabled]
}

fn endpoints_of(event_id: &str) -> Vec<i64> {
    column(&format!(
        "SELECT endpoint_id FROM webhook_outbox.deliveries WHERE event_id = '{event_id}' ORDER BY endpoint_id"
    ))
}

#[pg_test(schema = "tests")]
fn emit_fans_out_to_enabled_subscribed_endpoints() {
    let [all, paid, users, _disabled] = fan_out_endpoints();
    let emit = "SELECT webhook_outbox.emit('order.paid', '{\"order\": 1}', 'evt-1', 'c-1')";
    assert_eq!(one::<i32>(emit), 2);
    assert_eq!(count("true"), 0, "in the intake until it is moved");
    assert_eq!(route(), 1);
    assert_eq!(endpoints_of("evt-1"), vec![all, paid]);
    assert_eq!(
        column::<String>(
            "SELECT DISTINCT format('%s|%s|%s|%s', event_type, payload, subject_id, status) FROM webhook_outbox.deliveries"
        ),
        vec![r#"order.paid|{"order": 1}|c-1|pending"#]
    );
    // Repeating the event creates nothing more, moved apart or together.
    assert_eq!(one::<i32>(emit), 2, "the endpoints it goes to");
    assert_eq!(route(), 1);
    assert_eq!(count("true"), 2);
    run("SELECT webhook_outbox.emit('order.paid', '{}', 'evt-4'), webhook_outbox.emit('order.paid', '{}', 'evt-4')");
    assert_eq!(route(), 2);
    assert_eq!(endpoints_of("evt-4"), vec![all, paid]);
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('user.created', '{}', 'evt-2')"),
        2
    );
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('nobody.cares', '{}', 'evt-3')"),
        1
    );
    route();
    assert_eq!(endpoints_of("evt-2"), vec![all, users]);
    assert_eq!(endpoints_of("evt-3"), vec![all]);
}

#[pg_test(schema = "tests")]
fn emit_shares_one_generated_event_id() {
    let [all, paid, ..] = fan_out_endpoints();
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}')"),
        2
    );
    route();
    let event_id = one::<String>("SELECT DISTINCT event_id FROM webhook_outbox.deliveries");
    assert_eq!(endpoints_of(&event_id), vec![all, paid]);
    // Without an event_id, each emit is a new event.
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}')"),
        2
    );
    route();
    assert_eq!(count("true"), 4);
}

#[pg_test(schema = "tests")]
fn emit_in_mode_off_and_shadow() {
    fan_out_endpoints();
    run("SET LOCAL webhook_outbox.mode = 'off'");
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}', 'evt-1')"),
        0
    );
    assert_eq!(count("true"), 0);
    run("SET LOCAL webhook_outbox.mode = 'shadow'");
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}', 'evt-1')"),
        2
    );
    route();
    assert_eq!(count("status = 'shadow'"), 2);
    assert_eq!(count("true"), 2);
}

#[pg_test(schema = "tests")]
fn emit_rejects_bad_input() {
    assert_fails(
        "SELECT webhook_outbox.emit('order.paid', NULL)",
        "22004",
        "payload must not be NULL",
    );
    assert_fails(
        "SELECT webhook_outbox.emit('', '{}')",
        "22023",
        "event_type must not be empty",
    );
    run("SET LOCAL webhook_outbox.max_payload_bytes = 10");
    assert_fails(
        "SELECT webhook_outbox.emit('order.paid', '{\"a\": \"0123456789\"}')",
        "54000",
        "exceeds webhook_outbox.max_payload_bytes (10)",
    );
}

#[pg_test(schema = "tests")]
fn emit_from_a_trigger() {
    let [all, paid, ..] = fan_out_endpoints();
    run("CREATE TABLE orders (id int PRIMARY KEY, total numeric)");
    run("CREATE FUNCTION orders_emit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM webhook_outbox.emit('order.paid', to_jsonb(NEW), 'order-' || NEW.id, NEW.id::text);
             RETURN NULL;
         END $$");
    run("CREATE TRIGGER orders_emit AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_emit()");
    run("INSERT INTO orders VALUES (1, 9.50), (2, 20)");
    route();
    assert_eq!(endpoints_of("order-1"), vec![all, paid]);
    assert_eq!(endpoints_of("order-2"), vec![all, paid]);
    assert_eq!(
        column::<String>(
            "SELECT DISTINCT format('%s|%s', subject_id, payload) FROM webhook_outbox.deliveries ORDER BY 1"
        ),
        vec![r#"1|{"id": 1, "total": 9.50}"#, r#"2|{"id": 2, "total": 20}"#]
    );
}

#[pg_test(schema = "tests")]
fn enqueue_and_emit_check_event_keys_where_they_are_given() {
    let e = endpoint("");
    let call = |f: &str, args: &str| match f {
        "enqueue" => format!("SELECT webhook_outbox.enqueue({e}, {args})"),
        _ => format!("SELECT webhook_outbox.emit({args})"),
    };
    for f in ["enqueue", "emit"] {
        let long = "x".repeat(256);
        assert_fails(
            &call(f, &format!("'t', '{{}}', event_id => '{long}'")),
            "22023",
            "event_id must be 1 to 255 bytes long, got 256",
        );
        assert_fails(
            &call(f, "'t', '{}', event_id => E'a\\r\\nx-injected: 1'"),
            "22023",
            "event_id contains '\\r'",
        );
        assert_fails(
            &call(f, "'t', '{}', subject_id => E'caf\\u00e9'"),
            "22023",
            "subject_id contains 'é': only printable ASCII",
        );
        assert_fails(
            &call(f, &format!("'{}', '{{}}'", "t".repeat(300))),
            "22023",
            "event_type must be 1 to 255 bytes long",
        );
        // The longest allowed key goes in, and a NULL subject is fine.
        run(&call(
            f,
            &format!(
                "'t', '{{}}', event_id => '{}-{f}'",
                "k".repeat(254 - f.len())
            ),
        ));
    }
}

#[pg_test(schema = "tests")]
fn emit_writes_the_intake_and_the_next_claim_moves_it() {
    let [all, paid, ..] = fan_out_endpoints();
    run("SELECT webhook_outbox.set_rollout('f', 100)");
    let emit = "SELECT webhook_outbox.emit('order.paid', '{\"n\": 1}', 'evt-1', 'c-1', 'f')";
    assert_eq!(one::<i32>(emit), 2);
    assert_eq!(
        one::<String>(
            "SELECT format('%s|%s|%s|%s|%s|%s', endpoint_ids, event_id, event_type, payload, subject_id, flag_key)
             FROM webhook_outbox.intake"
        ),
        format!(r#"{{{all},{paid}}}|evt-1|order.paid|{{"n": 1}}|c-1|f"#)
    );
    // Operators see the event as a pending delivery per endpoint at once.
    assert_eq!(
        one::<i64>("SELECT count FROM webhook_outbox.v_queue_status WHERE status = 'pending'"),
        2
    );
    assert_eq!(
        column::<i64>("SELECT pending FROM webhook_outbox.v_webhook_health_dashboard WHERE pending > 0 ORDER BY webhook_id"),
        vec![1, 1]
    );
    // An external worker's claim moves it first, and takes its deliveries.
    run("UPDATE webhook_outbox.endpoints SET created_at = now() - interval '2 minutes'");
    run("UPDATE webhook_outbox.intake SET created_at = now() - interval '1 minute'");
    assert_eq!(
        column::<i64>(
            "SELECT endpoint_id FROM webhook_outbox.get_ready_deliveries(10) ORDER BY endpoint_id"
        ),
        vec![all, paid]
    );
    assert_eq!(one::<i64>("SELECT count(*) FROM webhook_outbox.intake"), 0);
    assert_eq!(
        column::<String>(
            "SELECT DISTINCT format('%s|%s|%s', flag_key, created_at = now() - interval '1 minute',
                                    next_attempt_at = created_at)
             FROM webhook_outbox.deliveries"
        ),
        vec!["f|t|t"],
        "the flag, and the time emit() gave it"
    );
    assert_eq!(
        one::<i64>("SELECT count FROM webhook_outbox.v_queue_status WHERE status = 'sending'"),
        2
    );
}

#[pg_test(schema = "tests")]
fn the_intake_skips_endpoints_deleted_since_emit() {
    let [all, paid, ..] = fan_out_endpoints();
    run("SELECT webhook_outbox.emit('order.paid', '{}', 'evt-1')");
    run(&format!(
        "DELETE FROM webhook_outbox.endpoints WHERE id = {paid}"
    ));
    assert_eq!(route(), 1);
    assert_eq!(endpoints_of("evt-1"), vec![all]);
    // Nor does an endpoint newer than the event (an id used again after
    // TRUNCATE ... RESTART IDENTITY).
    let newer = endpoint("");
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}', 'evt-2')"),
        2,
        "to {all} and {newer}"
    );
    run("UPDATE webhook_outbox.intake SET created_at = now() - interval '1 minute'");
    run(&format!(
        "UPDATE webhook_outbox.endpoints SET created_at = now() - interval '2 minutes' WHERE id = {all}"
    ));
    assert_eq!(route(), 1);
    assert_eq!(endpoints_of("evt-2"), vec![all]);
}

#[pg_test(schema = "tests")]
fn emit_sees_its_own_endpoint_changes_at_once() {
    let [all, paid, ..] = fan_out_endpoints();
    let emit = "SELECT webhook_outbox.emit('order.paid', '{}')";
    assert_eq!(one::<i32>(emit), 2, "cached");
    run(&format!(
        "UPDATE webhook_outbox.endpoints SET enabled = false WHERE id = {paid}"
    ));
    assert_eq!(one::<i32>(emit), 1, "own change, before commit");
    let b = endpoint("");
    assert_eq!(one::<i32>(emit), 2, "a new endpoint");
    // An EXCEPTION block rolls back a change this session had already used.
    let (_, inside) = super::error_of(&format!(
        "DO $$ BEGIN
             UPDATE webhook_outbox.endpoints SET enabled = false WHERE id IN ({all}, {b});
             RAISE EXCEPTION '%', webhook_outbox.emit('order.paid', '{{}}');
         END $$"
    ));
    assert_eq!(inside, "0", "inside the block nobody subscribes");
    assert_eq!(one::<i32>(emit), 2, "after the block's rollback");
}
