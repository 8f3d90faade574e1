//! create_endpoint: what it stores, and each input it refuses.

use super::{assert_fails, endpoint, error_of, maybe, one, run};
use pgrx::prelude::*;

#[pg_test(schema = "tests")]
fn create_endpoint_stores_the_endpoint_and_its_health_row() {
    let id = one::<i64>(
        "SELECT webhook_outbox.create_endpoint('https://example.com/hook', name => 'orders',
             event_types => '{order.paid,order.refunded}', rate_limit_rps => 2.5, max_attempts => 3,
             headers => '{\"Authorization\": \"Bearer t\"}')",
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s|%s|%s|%s|%s|%s', url, name, event_types, rate_limit_rps, max_attempts,
                           headers, enabled)
             FROM webhook_outbox.endpoints WHERE id = {id}"
        )),
        r#"https://example.com/hook|orders|{order.paid,order.refunded}|2.5|3|{"Authorization": "Bearer t"}|t"#
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s|%s|%s', total_deliveries, consecutive_failures, health_status, circuit_state)
             FROM webhook_outbox.health_metrics WHERE webhook_id = {id}"
        )),
        "0|0|healthy|closed"
    );
    // Defaults: every event type, GUC rate and attempts, no headers.
    let plain = endpoint("");
    assert!(one::<bool>(&format!(
        "SELECT event_types IS NULL AND rate_limit_rps IS NULL AND max_attempts IS NULL AND headers = '{{}}'
         FROM webhook_outbox.endpoints WHERE id = {plain}"
    )));
}

#[pg_test(schema = "tests")]
fn create_endpoint_generates_a_24_byte_whsec_secret() {
    let (a, b) = (endpoint(""), endpoint(""));
    let secret = |id: i64| {
        one::<String>(&format!(
            "SELECT secret FROM webhook_outbox.endpoints WHERE id = {id}"
        ))
    };
    let (sa, sb) = (secret(a), secret(b));
    assert!(sa.starts_with("whsec_"), "{sa}");
    let key_len = one::<i32>(&format!(
        "SELECT length(decode(substr(secret, 7), 'base64')) FROM webhook_outbox.endpoints WHERE id = {a}"
    ));
    assert_eq!(key_len, 24);
    assert_ne!(sa, sb, "each endpoint gets its own random secret");
}

#[pg_test(schema = "tests")]
fn create_endpoint_keeps_a_given_secret() {
    // whsec_ + base64 of 32 bytes.
    let id = endpoint("secret => 'whsec_' || encode(sha256('test key'), 'base64')");
    assert!(one::<bool>(&format!(
        "SELECT secret = 'whsec_' || encode(sha256('test key'), 'base64') FROM webhook_outbox.endpoints WHERE id = {id}"
    )));
}

#[pg_test(schema = "tests", error = "url must not be NULL")]
fn create_endpoint_null_url_is_an_error() {
    run("SELECT webhook_outbox.create_endpoint(NULL)");
}

#[pg_test(schema = "tests")]
fn create_endpoint_rejects_bad_urls() {
    let create = |url: &str| format!("SELECT webhook_outbox.create_endpoint('{url}')");
    assert_fails(
        "SELECT webhook_outbox.create_endpoint(NULL)",
        "22004",
        "url must not be NULL",
    );
    let cases = [
        ("ftp://example.com/hook", "scheme \"ftp\" is not supported"),
        ("example.com/hook", "is malformed"),
        ("https://:8443/hook", "\"https://:8443/…\" has no host"),
        (
            "https://user:pw@example.com/hook",
            "must not contain credentials",
        ),
        (
            "https://token@example.com/hook",
            "must not contain credentials",
        ),
        (
            "http://example.com/hook",
            "http URLs are refused while webhook_outbox.allow_http is off",
        ),
        ("", "webhook URL is empty"),
    ];
    for (url, message) in cases {
        assert_fails(&create(url), "22023", message);
    }
    // Credentials are never echoed back.
    let (_, message) = error_of(&create("https://user:hunter2@example.com/"));
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.endpoints"),
        0
    );
}

#[pg_test(schema = "tests")]
fn create_endpoint_accepts_http_only_with_allow_http() {
    let sql = "SELECT webhook_outbox.create_endpoint('http://example.com/hook')";
    assert_fails(sql, "22023", "allow_http is off");
    run("SET LOCAL webhook_outbox.allow_http = on");
    let id = one::<i64>(sql);
    assert_eq!(
        maybe::<String>(&format!(
            "SELECT url FROM webhook_outbox.endpoints WHERE id = {id}"
        ))
        .as_deref(),
        Some("http://example.com/hook")
    );
}

#[pg_test(schema = "tests")]
fn create_endpoint_rejects_bad_secrets() {
    let create = |secret: &str| {
        format!(
            "SELECT webhook_outbox.create_endpoint('https://example.com/', secret => '{secret}')"
        )
    };
    assert_fails(
        &create("hunter2"),
        "22023",
        "signing secret must start with \"whsec_\"",
    );
    assert_fails(
        &create("whsec_!!!not base64!!!"),
        "22023",
        "is not standard base64",
    );
    assert_fails(
        &create("whsec_c2hvcnQ="),
        "22023",
        "signing secret decodes to 5 bytes",
    );
}

#[pg_test(schema = "tests")]
fn create_endpoint_rejects_bad_limits() {
    let create = |args: &str| {
        format!("SELECT webhook_outbox.create_endpoint('https://example.com/', {args})")
    };
    let rps = "rate_limit_rps must be 0 (unlimited) or between 0.001 and 1000000, got";
    assert_fails(
        &create("rate_limit_rps => -1"),
        "22023",
        &format!("{rps} -1"),
    );
    assert_fails(&create("rate_limit_rps => 'NaN'"), "22023", rps);
    assert_fails(&create("rate_limit_rps => 2e-13"), "22023", rps);
    assert_fails(&create("rate_limit_rps => 1e7"), "22023", rps);
    assert_fails(
        &create("max_attempts => 0"),
        "22023",
        "max_attempts must be between 1 and 100, got 0",
    );
    assert_fails(
        &create("max_attempts => 101"),
        "22023",
        "max_attempts must be between 1 and 100, got 101",
    );
    // The bounds themselves are fine; 0 rps means unlimited.
    endpoint("rate_limit_rps => 0, max_attempts => 1");
    endpoint("max_attempts => 100");
}

#[pg_test(schema = "tests")]
fn create_endpoint_rejects_bad_headers() {
    let create = |headers: &str| {
        format!(
            "SELECT webhook_outbox.create_endpoint('https://example.com/', headers => '{headers}')"
        )
    };
    assert_fails(
        &create(r#"["X-A", "1"]"#),
        "22023",
        "headers must be a JSON object",
    );
    assert_fails(
        &create(r#""X-A: 1""#),
        "22023",
        "headers must be a JSON object",
    );
    assert_fails(
        &create(r#"{"X-A": 1}"#),
        "22023",
        "header \"X-A\" must have a string value",
    );
    assert_fails(
        &create(r#"{"X-A": null}"#),
        "22023",
        "header \"X-A\" must have a string value",
    );
    assert_fails(
        &create(r#"{"X-A": "a\nb"}"#),
        "22023",
        "header \"X-A\" has an invalid value",
    );
    assert_fails(
        &create(r#"{"X A": "1"}"#),
        "22023",
        "header name \"X A\" is not a valid HTTP header name",
    );
    for reserved in [
        "webhook-signature",
        "Webhook-Id",
        "content-type",
        "Content-Type",
        "Host",
    ] {
        assert_fails(
            &create(&format!(r#"{{"{reserved}": "x"}}"#)),
            "22023",
            &format!("header \"{reserved}\" is set by webhook_outbox and cannot be overridden"),
        );
    }
}

#[pg_test(schema = "tests")]
fn create_endpoint_rejects_bad_event_types_and_names() {
    let create = |args: &str| {
        format!("SELECT webhook_outbox.create_endpoint('https://example.com/', {args})")
    };
    assert_fails(
        &create("event_types => '{}'"),
        "22023",
        "event_types is an empty array",
    );
    assert_fails(
        &create("event_types => '{order.paid,NULL}'"),
        "22023",
        "event_types must not contain NULL or empty names",
    );
    assert_fails(
        &create("event_types => ARRAY['']"),
        "22023",
        "event_types must not contain NULL or empty names",
    );
    assert_fails(
        &create("name => ' '"),
        "22023",
        "endpoint name must not be empty",
    );
}

#[pg_test(schema = "tests")]
fn create_endpoint_duplicate_name_is_a_unique_violation() {
    endpoint("name => 'orders'");
    assert_fails(
        "SELECT webhook_outbox.create_endpoint('https://example.org/', name => 'orders')",
        "23505",
        "an endpoint named \"orders\" already exists",
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.endpoints"),
        1
    );
    // Unnamed endpoints never collide.
    endpoint("");
    endpoint("");
}
