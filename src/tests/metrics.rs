//! metrics(): the Prometheus text it renders, checked line by line against
//! the exposition format.

use super::one;
use crate::worker::render_metrics;
use pgrx::prelude::*;

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{name="value",...}` with only the escapes the format allows.
fn is_label_set(s: &str) -> bool {
    let Some(mut rest) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return false;
    };
    while !rest.is_empty() {
        let Some((name, value)) = rest.split_once("=\"") else {
            return false;
        };
        if !is_name(name) {
            return false;
        }
        let mut chars = value.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) if matches!(chars.next(), Some((_, '\\' | '"' | 'n'))) => {}
                Some((_, '\\' | '\n')) | None => return false,
                Some((i, '"')) => break i,
                Some(_) => {}
            }
        };
        rest = &value[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    true
}

/// Every line is HELP, TYPE, or a sample of the family last TYPEd.
fn assert_exposition(text: &str) {
    assert!(text.ends_with('\n'));
    let mut family: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split(' ').next().is_some_and(is_name), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_default();
            assert!(
                is_name(name) && ["counter", "gauge", "histogram"].contains(&kind),
                "{line}"
            );
            family = Some((name, kind));
        } else {
            let (series, value) = line.rsplit_once(' ').expect(line);
            assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
            let (name, labels) = series
                .find('{')
                .map_or((series, ""), |i| series.split_at(i));
            assert!(labels.is_empty() || is_label_set(labels), "{line}");
            let (family, kind) = family.expect("a sample before any TYPE");
            let suffix = name.strip_prefix(family).expect(line);
            assert!(
                suffix.is_empty()
                    || (kind == "histogram" && ["_bucket", "_sum", "_count"].contains(&suffix)),
                "{line}"
            );
        }
    }
}

#[test]
fn the_checker_rejects_bad_lines() {
    assert!(is_label_set(r#"{a="x\"y\\z\n",b=""}"#));
    assert!(!is_label_set(r#"{a="x"y"}"#));
    assert!(!is_label_set(r#"{a="x\q"}"#));
    assert!(!is_label_set(r#"{1a="x"}"#));
}

/// A claimed row keeps its status: the queue depth derives "sending" from
/// the lease, and counts the row there only.
#[pg_test(schema = "tests")]
fn metrics_count_leased_rows_as_sending() {
    let a = Spi::get_one::<i64>("SELECT webhook_outbox.create_endpoint('https://example.com/a')")
        .unwrap()
        .unwrap();
    Spi::run(&format!(
        "SELECT webhook_outbox.enqueue({a}, 't', '{{}}', 'e' || i) FROM generate_series(1, 3) i;
         UPDATE webhook_outbox.deliveries SET status = 'retry', attempt_count = 1, next_attempt_at = now() + interval '1 minute'
         WHERE event_id = 'e3';
         SELECT count(*) FROM webhook_outbox.get_ready_deliveries(1);"
    ))
    .unwrap();
    let text = Spi::connect_mut(render_metrics).unwrap().unwrap();
    for line in [
        r#"webhook_queue_depth{status="pending"} 1"#,
        r#"webhook_queue_depth{status="retry"} 1"#,
        r#"webhook_queue_depth{status="sending"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

#[pg_test(schema = "tests")]
fn metrics_reports_a_known_setup() {
    let id = |sql: &str| one::<i64>(sql);
    // A name that needs every escape: quote, backslash, newline.
    let a =
        id(r#"SELECT webhook_outbox.create_endpoint('https://example.com/a', E'we"ird\\name\nx')"#);
    let b = id("SELECT webhook_outbox.create_endpoint('https://example.com/b')");
    Spi::run(&format!(
        "SELECT webhook_outbox.update_webhook_health({a}, 200, 30);
         SELECT webhook_outbox.update_webhook_health({a}, 500, 1200);
         UPDATE webhook_outbox.health_metrics SET circuit_state = 'open', circuit_opened_at = now() WHERE webhook_id = {b};
         INSERT INTO webhook_outbox.attempts (delivery_id, endpoint_id, attempt_no, duration_ms, attempted_at)
         VALUES (0, {a}, 1, 3, now()), (0, {a}, 1, 30, now()), (0, {a}, 1, 1200, now()), (0, {a}, 1, NULL, now()),
                (0, {a}, 1, 7, now() - interval '2 hours');
         SELECT webhook_outbox.enqueue({a}, 't', '{{}}', 'p1'), webhook_outbox.enqueue({a}, 't', '{{}}', 'p2'),
                webhook_outbox.enqueue({b}, 't', '{{}}', 'd1');
         UPDATE webhook_outbox.deliveries SET created_at = now() - interval '90 seconds' WHERE event_id = 'p1';
         UPDATE webhook_outbox.deliveries SET status = 'dead', dead_at = now() WHERE event_id = 'd1';
         SELECT webhook_outbox.set_rollout('new-checkout', 10), webhook_outbox.allowlist_add('new-checkout', 'u1');
         SELECT webhook_outbox.emit('t', '{{}}', 'f1', 'u1', 'new-checkout');"
    ))
    .unwrap();
    super::route();

    let text = Spi::connect_mut(render_metrics).unwrap().unwrap();
    assert_exposition(&text);
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        format!(r#"webhook_deliveries_total{{endpoint="{a}",status="sent"}} 1"#),
        format!(r#"webhook_deliveries_total{{endpoint="{a}",status="failed"}} 1"#),
        format!(r#"webhook_deliveries_total{{endpoint="{b}",status="sent"}} 0"#),
        format!(r#"webhook_endpoint_info{{endpoint="{a}",name="we\"ird\\name\nx"}} 1"#),
        format!(r#"webhook_endpoint_info{{endpoint="{b}",name=""}} 1"#),
        format!(r#"webhook_delivery_duration_seconds_bucket{{endpoint="{a}",le="0.005"}} 1"#),
        format!(r#"webhook_delivery_duration_seconds_bucket{{endpoint="{a}",le="0.025"}} 1"#),
        format!(r#"webhook_delivery_duration_seconds_bucket{{endpoint="{a}",le="0.05"}} 2"#),
        format!(r#"webhook_delivery_duration_seconds_bucket{{endpoint="{a}",le="1"}} 2"#),
        format!(r#"webhook_delivery_duration_seconds_bucket{{endpoint="{a}",le="2.5"}} 3"#),
        format!(r#"webhook_delivery_duration_seconds_bucket{{endpoint="{a}",le="+Inf"}} 3"#),
        format!(r#"webhook_delivery_duration_seconds_sum{{endpoint="{a}"}} 1.233"#),
        format!(r#"webhook_delivery_duration_seconds_count{{endpoint="{a}"}} 3"#),
        format!(r#"webhook_delivery_duration_seconds_count{{endpoint="{b}"}} 0"#),
        // p1, p2, and f1 fanned out to a and b.
        r#"webhook_queue_depth{status="pending"} 4"#.to_owned(),
        r#"webhook_queue_depth{status="retry"} 0"#.to_owned(),
        r#"webhook_queue_depth{status="dead"} 1"#.to_owned(),
        "webhook_oldest_pending_age_seconds 90.000".to_owned(),
        format!(r#"webhook_circuit_open{{endpoint="{a}"}} 0"#),
        format!(r#"webhook_circuit_open{{endpoint="{b}"}} 1"#),
        r#"webhook_rollout_enabled{flag="new-checkout"} 1"#.to_owned(),
        r#"webhook_rollout_percentage{flag="new-checkout"} 10"#.to_owned(),
        r#"webhook_rollout_events_last_hour{flag="new-checkout"} 1"#.to_owned(),
        // The #[pg_test] cluster runs no worker: the family has no samples.
        "# TYPE webhook_worker_up gauge".to_owned(),
    ];
    for line in &expected {
        assert!(lines.contains(&line.as_str()), "missing {line} in\n{text}");
    }
    assert!(!text.contains("webhook_worker_up{"), "{text}");
}
