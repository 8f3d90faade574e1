//! An endpoint's life after create_endpoint: update, disable, enable, delete,
//! and the audit trail every change leaves.

use super::{assert_fails, claim, endpoint, enqueue, maybe, one, route, run};
use pgrx::prelude::*;

/// The endpoint's columns that update_endpoint changes, as one string.
fn fields(id: i64) -> String {
    one(&format!(
        "SELECT format('%s|%s|%s|%s|%s|%s', url, name, event_types, rate_limit_rps, max_attempts, headers)
         FROM webhook_outbox.endpoints WHERE id = {id}"
    ))
}

/// `operation:changed` of the endpoint's audit rows, oldest first.
fn audit(id: i64) -> Vec<String> {
    super::column(&format!(
        "SELECT operation || ':' || coalesce(array_to_string(changed, ','), '')
         FROM webhook_outbox.endpoint_changes WHERE endpoint_id = {id} ORDER BY id"
    ))
}

#[pg_test(schema = "tests")]
fn update_endpoint_changes_what_is_given_and_resets_what_is_named() {
    let id = endpoint(
        "name => 'orders', event_types => '{order.paid}', rate_limit_rps => 5, max_attempts => 3,
         headers => '{\"X-Team\": \"a\"}'",
    );
    assert!(one::<bool>(&format!(
        "SELECT webhook_outbox.update_endpoint({id}, url => 'https://example.org/v2', max_attempts => 7)"
    )));
    assert_eq!(
        fields(id),
        r#"https://example.org/v2|orders|{order.paid}|5|7|{"X-Team": "a"}"#
    );
    assert!(one::<bool>(&format!(
        "SELECT webhook_outbox.update_endpoint({id}, name => 'billing',
             reset => '{{event_types,rate_limit_rps,max_attempts,headers}}')"
    )));
    assert_eq!(fields(id), "https://example.org/v2|billing||||{}");
    // Nothing differs: no write, no audit row.
    assert!(!one::<bool>(&format!(
        "SELECT webhook_outbox.update_endpoint({id}, name => 'billing')"
    )));
    assert_eq!(audit(id).len(), 3, "{:?}", audit(id));
}

#[pg_test(schema = "tests")]
fn update_endpoint_checks_like_create_endpoint() {
    let id = endpoint("name => 'a'");
    endpoint("name => 'b'");
    let call = |args: &str| format!("SELECT webhook_outbox.update_endpoint({id}, {args})");
    assert_fails(&call("url => 'ftp://example.com/'"), "22023", "");
    assert_fails(&call("url => 'https://user:pw@example.com/'"), "22023", "");
    assert_fails(&call("name => ' '"), "22023", "must not be empty");
    assert_fails(&call("name => 'b'"), "23505", "\"b\" already exists");
    assert_fails(&call("event_types => '{}'"), "22023", "empty array");
    assert_fails(&call("rate_limit_rps => -1"), "22023", "rate_limit_rps");
    assert_fails(&call("max_attempts => 0"), "22023", "max_attempts");
    assert_fails(&call("headers => '[]'"), "22023", "JSON object");
    assert_fails(&call("headers => '{\"Host\": \"x\"}'"), "22023", "");
    assert_fails(&call("reset => '{secret}'"), "22023", "no default");
    assert_fails(&call("reset => '{url}'"), "22023", "no default");
    assert_fails(
        &call("max_attempts => 3, reset => '{max_attempts}'"),
        "22023",
        "both given and reset",
    );
    assert_fails(
        "SELECT webhook_outbox.update_endpoint(NULL, max_attempts => 3)",
        "22004",
        "endpoint_id",
    );
    assert_fails(
        "SELECT webhook_outbox.update_endpoint(999999, max_attempts => 3)",
        "42704",
        "does not exist",
    );
    // Keeping its own name is no collision.
    assert!(!one::<bool>(&call("name => 'a'")));
    assert_eq!(fields(id), "https://example.com/hook|a||||{}");
}

#[pg_test(schema = "tests")]
fn disabled_endpoint_gets_no_new_events_and_its_rows_wait_until_enabled() {
    let id = endpoint("event_types => '{order.paid}'");
    let waiting = enqueue(id);
    assert!(one::<bool>(&format!(
        "SELECT webhook_outbox.disable_endpoint({id}, 'receiver migrating')"
    )));
    assert_eq!(
        one::<String>(&format!(
            "SELECT disabled_reason FROM webhook_outbox.v_degraded_webhooks WHERE webhook_id = {id}"
        )),
        "receiver migrating"
    );
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}')"),
        0
    );
    assert!(claim(10).is_empty());
    // Again: false, the reason updated.
    assert!(!one::<bool>(&format!(
        "SELECT webhook_outbox.disable_endpoint({id}, 'still migrating')"
    )));
    for blank in ["''", "E' \\t\\n'"] {
        assert_fails(
            &format!("SELECT webhook_outbox.disable_endpoint({id}, {blank})"),
            "22023",
            "reason must not be empty",
        );
    }
    assert_fails(
        &format!("SELECT webhook_outbox.disable_endpoint({id}, repeat('x', 1001))"),
        "22001",
        "at most 1000",
    );
    assert_fails(
        &format!("SELECT webhook_outbox.disable_endpoint({id}, NULL)"),
        "22004",
        "reason",
    );

    // A retry waiting out a long backoff goes at once when enabled.
    run(&format!(
        "UPDATE webhook_outbox.deliveries SET status = 'retry', next_attempt_at = now() + interval '5 hours'
         WHERE id = {waiting}"
    ));
    assert!(one::<bool>(&format!(
        "SELECT webhook_outbox.enable_endpoint({id})"
    )));
    assert!(!one::<bool>(&format!(
        "SELECT webhook_outbox.enable_endpoint({id})"
    )));
    assert_eq!(
        maybe::<String>(&format!(
            "SELECT disabled_reason FROM webhook_outbox.endpoints WHERE id = {id}"
        )),
        None
    );
    assert_eq!(claim(10), vec![waiting]);
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}')"),
        1
    );
    assert_eq!(
        audit(id)[1..],
        [
            "disable:disabled_reason,enabled",
            "update:disabled_reason",
            "enable:disabled_reason,enabled"
        ]
    );
}

#[pg_test(schema = "tests")]
fn delete_endpoint_refuses_while_rows_wait_unless_they_may_die() {
    let id = endpoint("name => 'orders', event_types => '{order.paid}'");
    let other = endpoint("event_types => '{order.paid}'");
    let queued = enqueue(id);
    // Still in the intake: counted as well.
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}', 'e-1')"),
        2
    );
    assert_fails(
        &format!("SELECT webhook_outbox.delete_endpoint({id})"),
        "55006",
        &format!("endpoint {id} still has 2 undelivered deliveries"),
    );
    assert_eq!(
        one::<i64>(&format!(
            "SELECT webhook_outbox.delete_endpoint({id}, dead_reason => 'customer left')"
        )),
        2
    );
    assert_eq!(
        super::column::<String>(&format!(
            "SELECT status || ':' || last_error FROM webhook_outbox.deliveries WHERE endpoint_id = {id} ORDER BY id"
        )),
        ["dead:endpoint deleted: customer left", "dead:endpoint deleted: customer left"]
    );
    // The intake event still reaches the other endpoint, and only it.
    assert_eq!(route(), 0);
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.deliveries WHERE endpoint_id = {other} AND event_id = 'e-1'"
        )),
        1
    );
    // Gone for every API, its name free, its dead letters kept but never replayed.
    assert_fails(
        &format!("SELECT webhook_outbox.enqueue({id}, 't', '{{}}')"),
        "42704",
        "does not exist",
    );
    assert_fails(
        &format!("SELECT webhook_outbox.enable_endpoint({id})"),
        "55000",
        "was deleted",
    );
    assert_fails(
        &format!("SELECT webhook_outbox.delete_endpoint({id})"),
        "55000",
        "was deleted",
    );
    assert_eq!(
        one::<i32>("SELECT webhook_outbox.emit('order.paid', '{}')"),
        1
    );
    endpoint("name => 'orders'");
    assert_eq!(
        one::<i64>(&format!(
            "SELECT webhook_outbox.requeue_dead(endpoint_id => {id})"
        )),
        0
    );
    assert_eq!(
        one::<i64>(&format!(
            "SELECT (SELECT count(*) FROM webhook_outbox.v_webhook_health_dashboard WHERE webhook_id = {id})
                  + (SELECT count(*) FROM webhook_outbox.v_webhook_performance WHERE webhook_id = {id})"
        )),
        0
    );
    assert!(!one::<String>("SELECT webhook_outbox.metrics()")
        .contains(&format!("webhook_endpoint_info{{endpoint=\"{id}\"")));
    assert_eq!(delivery_status(queued), "dead");
    assert_eq!(
        audit(id).last().map(String::as_str),
        Some("delete:deleted_at,disabled_reason,enabled,name")
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT reason FROM webhook_outbox.endpoint_changes WHERE endpoint_id = {id} AND operation = 'delete'"
        )),
        "deleted: customer left"
    );

    // Without undelivered rows, no reason is needed.
    let idle = endpoint("");
    assert_eq!(
        one::<i64>(&format!("SELECT webhook_outbox.delete_endpoint({idle})")),
        0
    );
}

fn delivery_status(id: i64) -> String {
    super::delivery(id, "status")
}

/// Who, when and what, for the functions and a direct UPDATE alike; never
/// the secret, a header's value, or the URL's path and query.
#[pg_test(schema = "tests")]
fn endpoint_changes_record_who_and_what_but_no_secret() {
    let id = endpoint(
        "secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', headers => '{\"Authorization\": \"Bearer hunter2\"}'",
    );
    run(&format!(
        "SELECT webhook_outbox.update_endpoint({id}, url => 'https://example.net/hook/tok3n?key=s3cret')"
    ));
    run(&format!("UPDATE webhook_outbox.endpoints SET secret = 'whsec_bmV3LXNlY3JldC1rZXktMjQtYnl0ZXM=' WHERE id = {id}"));
    run(&format!(
        "SELECT webhook_outbox.disable_endpoint({id}, 'maintenance')"
    ));
    assert_eq!(
        audit(id),
        [
            "create:",
            "update:url",
            "rotate_secret:secret",
            "disable:disabled_reason,enabled"
        ]
    );
    assert!(one::<bool>(&format!(
        "SELECT bool_and(changed_by = session_user AND changed_at = now())
         FROM webhook_outbox.endpoint_changes WHERE endpoint_id = {id}"
    )));
    let trail = one::<String>(&format!(
        "SELECT string_agg(concat_ws('|', old_value, new_value, reason), E'\\n')
         FROM webhook_outbox.endpoint_changes WHERE endpoint_id = {id}"
    ));
    for leak in ["whsec_", "hunter2", "tok3n", "s3cret", "Bearer"] {
        assert!(!trail.contains(leak), "{leak} in the audit trail:\n{trail}");
    }
    assert!(
        trail.contains("\"url\": \"https://example.net\""),
        "{trail}"
    );
    assert!(
        trail.contains("\"header_names\": [\"Authorization\"]"),
        "{trail}"
    );
    // A row removed by hand is recorded as purged.
    run(&format!(
        "DELETE FROM webhook_outbox.endpoints WHERE id = {id}"
    ));
    assert_eq!(audit(id).last().map(String::as_str), Some("purge:"));
}

/// What operators see of a URL: scheme, host and port, never credentials.
#[pg_test(schema = "tests")]
fn url_origin_keeps_neither_credentials_nor_path() {
    for (url, origin) in [
        ("https://example.com/hook?token=x", "https://example.com"),
        (
            "https://user:pw@example.com:8443/hook",
            "https://example.com:8443",
        ),
        ("http://[::1]:9000#frag", "http://[::1]:9000"),
        ("https://a@b@example.com/", "https://example.com"),
    ] {
        assert_eq!(
            one::<String>(&format!("SELECT webhook_outbox._url_origin('{url}')")),
            origin,
            "{url}"
        );
    }
}

/// A role with no rights on endpoint_changes is audited when it updates an
/// endpoint it was allowed to, and cannot write the trail itself.
#[pg_test(schema = "tests")]
fn direct_updates_are_audited_with_the_updaters_name() {
    let id = endpoint("");
    run("CREATE ROLE webhook_outbox_test_editor");
    run("GRANT USAGE ON SCHEMA webhook_outbox TO webhook_outbox_test_editor");
    run("GRANT SELECT, UPDATE (rate_limit_rps) ON webhook_outbox.endpoints TO webhook_outbox_test_editor");
    run("SET LOCAL SESSION AUTHORIZATION webhook_outbox_test_editor");
    run(&format!(
        "UPDATE webhook_outbox.endpoints SET rate_limit_rps = 3 WHERE id = {id}"
    ));
    assert_fails(
        "INSERT INTO webhook_outbox.endpoint_changes (endpoint_id, operation) VALUES (1, 'update')",
        "42501",
        "permission denied",
    );
    run("RESET SESSION AUTHORIZATION");
    assert_eq!(
        one::<String>(&format!(
            "SELECT operation || '|' || changed_by || '|' || array_to_string(changed, ',')
             FROM webhook_outbox.endpoint_changes WHERE endpoint_id = {id} ORDER BY id DESC LIMIT 1"
        )),
        "update|webhook_outbox_test_editor|rate_limit_rps"
    );
}
