//! The background worker end to end: what each request carries, how outcomes
//! settle (retry, dead, Retry-After), per-endpoint rate limit and circuit
//! breaker, isolation from a hanging endpoint, wake-up at commit, and modes.
//! Each test has its own cluster and receivers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use postgres::Client;
use serde_json::json;
use webhook_outbox_it::outbox::{
    attempts, circuit_state, create_endpoint, delivery, enqueue, enqueue_seq, mentions, statuses, wait_for_all,
    wait_for_intake, wait_for_status, Endpoint, EndpointOpts,
};
use webhook_outbox_it::{wait_until, Cluster, Receiver, Reply, Request, BACKOFF_BASE, CIRCUIT_OPEN, HTTP_TIMEOUT};

const SETTLE: Duration = Duration::from_secs(10);

fn start(conf: &[(&str, &str)]) -> (Cluster, Client) {
    let cluster = Cluster::start(conf);
    let db = cluster.client();
    (cluster, db)
}

fn endpoint(db: &mut Client, rx: &Receiver, opts: EndpointOpts) -> Endpoint {
    create_endpoint(db, &rx.url(), &opts)
}

fn max_attempts(n: i32) -> EndpointOpts {
    EndpointOpts { max_attempts: Some(n), ..EndpointOpts::default() }
}

/// Time between consecutive requests.
fn gaps(requests: &[Request]) -> Vec<Duration> {
    requests.windows(2).map(|w| w[1].at - w[0].at).collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[test]
fn success_is_signed_and_byte_exact() {
    let (_cluster, mut db) = start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let opts = EndpointOpts { headers: Some(json!({"x-tenant": "acme"})), ..EndpointOpts::default() };
    let ep = endpoint(&mut db, &rx, opts);
    let payload = json!({"order": 42, "note": "ünïcødé ✓ \"quoted\"", "nested": {"list": [1, 2.5, null, true]}});

    let before_commit = Instant::now();
    let id = enqueue(&mut db, ep.id, &payload);
    let req = rx.wait_for_requests(1, SETTLE).remove(0);
    println!("commit → request: {}", ms(req.at - before_commit));
    let d = wait_for_status(&mut db, id, "sent", SETTLE);

    let row =
        db.query_one("SELECT payload::text, event_id FROM webhook_outbox.deliveries WHERE id = $1", &[&id]).unwrap();
    let (stored, event_id): (String, String) = (row.get(0), row.get(1));
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hook"));
    assert!(
        req.body == stored.as_bytes(),
        "body must be the stored payload, byte for byte:\n{}\n{stored}",
        String::from_utf8_lossy(&req.body)
    );
    assert!(req.header("content-type").is_some_and(|v| v.starts_with("application/json")), "{:?}", req.headers);
    assert_eq!(req.header("x-tenant"), Some("acme"), "endpoint's extra headers");
    assert_eq!(req.webhook_id(), event_id);
    req.verify_signature(&ep.secret).unwrap_or_else(|e| panic!("standardwebhooks rejects our signature: {e}: {req:?}"));
    // The check is real: the same signature must not cover another body.
    let tampered = Request { body: b"{\"order\": 43}".to_vec(), ..req.clone() };
    assert!(tampered.verify_signature(&ep.secret).is_err(), "a tampered body verified");

    assert_eq!(d.attempt_count, 1);
    let a = attempts(&mut db, id);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].status_code, Some(200));
    std::thread::sleep(BACKOFF_BASE * 3);
    assert_eq!(rx.request_count(), 1, "a sent delivery is not sent again");
}

#[test]
fn retry_then_success_keeps_the_webhook_id() {
    let (_cluster, mut db) = start(&[]);
    let rx = Receiver::http(vec![Reply::status(500), Reply::status(500), Reply::ok()]);
    let ep = endpoint(&mut db, &rx, EndpointOpts::default());
    let id = enqueue(&mut db, ep.id, &json!({"try": "again"}));

    let d = wait_for_status(&mut db, id, "sent", SETTLE);
    let requests = rx.requests();
    println!("gaps between attempts: {:?}", gaps(&requests).into_iter().map(ms).collect::<Vec<_>>());

    assert_eq!(d.attempt_count, 3);
    let codes: Vec<_> = attempts(&mut db, id).iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    assert_eq!(requests.len(), 3);
    let ids: HashSet<_> = requests.iter().map(Request::webhook_id).collect();
    assert_eq!(ids.len(), 1, "webhook-id must be stable across retries: {ids:?}");
    for req in &requests {
        req.verify_signature(&ep.secret).expect("every attempt is signed");
    }
    // The schedule doubles from BACKOFF_BASE, ±10% jitter: the second wait is the longer one.
    let g = gaps(&requests);
    assert!(g[0] >= BACKOFF_BASE.mul_f64(0.75), "first retry too early: {}", ms(g[0]));
    assert!(g[1] >= BACKOFF_BASE.mul_f64(1.5), "second retry too early: {}", ms(g[1]));
}

#[test]
fn retries_exhausted_go_dead() {
    let (_cluster, mut db) = start(&[]);
    let rx = Receiver::http(vec![Reply::status(503)]);
    let ep = endpoint(&mut db, &rx, max_attempts(3));
    let id = enqueue(&mut db, ep.id, &json!({"doomed": true}));

    let d = wait_for_status(&mut db, id, "dead", SETTLE);
    assert_eq!((d.attempt_count, d.last_status_code), (3, Some(503)));
    assert_eq!(attempts(&mut db, id).len(), 3);
    std::thread::sleep(BACKOFF_BASE * 5);
    assert_eq!(rx.request_count(), 3, "nothing is sent after dead");
}

#[test]
fn client_errors_are_dead_after_one_attempt() {
    let (_cluster, mut db) = start(&[]);
    let cases: Vec<_> = [400, 404]
        .into_iter()
        .map(|code| {
            let rx = Receiver::http(vec![Reply::status(code)]);
            let ep = endpoint(&mut db, &rx, EndpointOpts::default());
            (code, enqueue(&mut db, ep.id, &json!({"code": code})), rx)
        })
        .collect();
    for (code, id, rx) in &cases {
        let d = wait_for_status(&mut db, *id, "dead", SETTLE);
        assert_eq!((d.attempt_count, d.last_status_code), (1, Some(i32::from(*code))));
        let class: Option<String> = db
            .query_one("SELECT failure_class FROM webhook_outbox.attempts WHERE delivery_id = $1", &[id])
            .expect("the attempt")
            .get(0);
        assert_eq!(class.as_deref(), Some("http_status"));
        std::thread::sleep(BACKOFF_BASE * 3);
        assert_eq!(rx.request_count(), 1, "{code} must not be retried");
    }
}

/// 410 Gone disables the endpoint; its deliveries wait, and go once an
/// operator enables it again.
#[test]
fn gone_disables_the_endpoint_until_it_is_enabled() {
    let (_cluster, mut db) = start(&[]);
    let rx = Receiver::http(vec![Reply::status(410)]);
    let ep = endpoint(&mut db, &rx, max_attempts(1));
    let ids: Vec<i64> = (0..3).map(|n| enqueue(&mut db, ep.id, &json!({"n": n}))).collect();
    let disabled = wait_until(SETTLE, || {
        let row = db
            .query_one("SELECT enabled, disabled_reason FROM webhook_outbox.endpoints WHERE id = $1", &[&ep.id])
            .expect("endpoint");
        !row.get::<_, bool>(0) && row.get::<_, Option<String>>(1).as_deref() == Some("the receiver answered 410 Gone")
    });
    assert!(disabled, "the endpoint was not disabled");
    let sent = rx.request_count();
    assert!((1..=3).contains(&sent), "{sent} requests");
    std::thread::sleep(BACKOFF_BASE * 5);
    assert_eq!(rx.request_count(), sent, "nothing more goes to a disabled endpoint");
    for id in &ids {
        let status = delivery(&mut db, *id).status;
        assert!(status == "pending" || status == "retry", "delivery {id} is {status}: it must wait, not die");
    }
    let degraded: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_outbox.v_degraded_webhooks WHERE webhook_id = $1 AND NOT enabled",
            &[&ep.id],
        )
        .expect("degraded")
        .get(0);
    assert_eq!(degraded, 1);

    rx.set_replies(vec![Reply::ok()]);
    db.batch_execute(&format!("SELECT webhook_outbox.enable_endpoint({})", ep.id)).expect("enable");
    for id in &ids {
        wait_for_status(&mut db, *id, "sent", SETTLE);
    }
}

#[test]
fn redirects_are_not_followed() {
    let (_cluster, mut db) = start(&[]);
    let target = Receiver::http(vec![Reply::ok()]);
    let rx = Receiver::http(vec![Reply::status(302).header("location", &target.url())]);
    let ep = endpoint(&mut db, &rx, EndpointOpts::default());
    let id = enqueue(&mut db, ep.id, &json!({"go": "elsewhere"}));

    let d = wait_for_status(&mut db, id, "dead", SETTLE);
    println!("302 recorded as: {d:?}");
    assert_eq!((d.attempt_count, d.last_status_code), (1, Some(302)));
    assert!(mentions(&d.last_error, &["redirect"]), "the error should say it was a redirect: {d:?}");
    assert_eq!(target.connections(), 0, "the redirect target must not be contacted");
}

#[test]
fn a_receiver_chosen_location_is_stored_cut_short() {
    let (_cluster, mut db) = start(&[]);
    let location = format!("https://elsewhere.example/{}", "x".repeat(20_000));
    let rx = Receiver::http(vec![Reply::status(301).header("location", &location)]);
    let ep = endpoint(&mut db, &rx, EndpointOpts::default());
    let id = enqueue(&mut db, ep.id, &json!({}));
    let d = wait_for_status(&mut db, id, "dead", SETTLE);
    let stored = d.last_error.unwrap_or_default();
    assert!(stored.contains("https://elsewhere.example/xxx"), "{stored}");
    assert!(stored.len() <= 512, "{} bytes of Location kept", stored.len());
    for (what, sql) in [
        ("attempts.error", "SELECT max(octet_length(error)) FROM webhook_outbox.attempts"),
        ("health_metrics.last_error", "SELECT max(octet_length(last_error)) FROM webhook_outbox.health_metrics"),
    ] {
        let bytes: i32 = db.query_one(sql, &[]).expect(what).get(0);
        assert!(bytes <= 512, "{what}: {bytes} bytes");
    }
}

#[test]
fn retry_after_is_honoured() {
    let (_cluster, mut db) = start(&[]);
    let rx = Receiver::http(vec![Reply::status(429).header("retry-after", "2"), Reply::ok()]);
    let ep = endpoint(&mut db, &rx, EndpointOpts::default());
    let id = enqueue(&mut db, ep.id, &json!({"slow": "down"}));

    wait_for_status(&mut db, id, "sent", SETTLE);
    let gap = gaps(&rx.requests())[0];
    println!("429 with Retry-After: 2 → retried after {}", ms(gap));
    // The backoff step would be ~200 ms; the receiver asked for 2 s.
    assert!(gap >= Duration::from_millis(1900) && gap < Duration::from_millis(3500), "retried after {}", ms(gap));
}

#[test]
fn rate_limit_defers_without_failing() {
    let (_cluster, mut db) = start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let opts = EndpointOpts { rate_limit_rps: Some(10.0), ..EndpointOpts::default() };
    let ep = endpoint(&mut db, &rx, opts);

    let before_commit = Instant::now();
    enqueue_seq(&mut db, ep.id, 20);
    let requests = rx.wait_for_requests(20, SETTLE);
    let took = requests[19].at - before_commit;
    println!("20 deliveries at 10 rps: last request {} after commit", ms(took));
    wait_for_all(&mut db, ep.id, "sent", SETTLE);

    assert!(took >= Duration::from_millis(1500) && took <= Duration::from_millis(3500), "took {}", ms(took));
    let (max_attempt_count, failed): (i32, i64) = {
        let row = db
            .query_one(
                "SELECT (SELECT max(attempt_count) FROM webhook_outbox.deliveries WHERE endpoint_id = $1),
                        (SELECT count(*) FROM webhook_outbox.attempts WHERE endpoint_id = $1
                           AND (status_code IS NULL OR status_code NOT BETWEEN 200 AND 299))",
                &[&ep.id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(failed, 0, "rate limiting must not record failed attempts");
    assert_eq!(max_attempt_count, 1, "a deferred delivery must not use up attempts");
    assert_eq!(rx.request_count(), 20);
}

#[test]
fn circuit_opens_blocks_then_a_probe_closes_it() {
    let (_cluster, mut db) = start(&[]);
    // Five failures open the circuit; the probe answers slowly so a second
    // request during the probe would be seen.
    let probe_time = Duration::from_millis(500);
    let mut replies = vec![Reply::status(500); 5];
    replies.extend([Reply::ok().after(probe_time), Reply::ok()]);
    let rx = Receiver::http(replies);
    let ep = endpoint(&mut db, &rx, max_attempts(1));

    let failing = enqueue_seq(&mut db, ep.id, 5);
    for id in &failing {
        wait_for_status(&mut db, *id, "dead", SETTLE);
    }
    assert_eq!(circuit_state(&mut db, ep.id), "open");
    let opened = rx.requests()[4].at;
    let waiting = enqueue_seq(&mut db, ep.id, 3);

    let requests = rx.wait_for_requests(6, CIRCUIT_OPEN + SETTLE);
    let (probe, closed_after) = (&requests[5], requests[5].at - opened);
    println!("circuit open for {} before the probe", ms(closed_after));
    assert!(
        closed_after >= CIRCUIT_OPEN - Duration::from_millis(100),
        "a request while open: after {}",
        ms(closed_after)
    );
    for id in &waiting {
        wait_for_status(&mut db, *id, "sent", SETTLE);
    }
    assert_eq!(circuit_state(&mut db, ep.id), "closed");
    let requests = rx.requests();
    assert_eq!(requests.len(), 8, "5 failures + 3 deliveries");
    assert!(requests[6].at >= probe.at + probe_time, "a second request went out during the probe");
}

#[test]
fn hanging_endpoint_does_not_delay_others() {
    let (_cluster, mut db) = start(&[]);
    let stuck = Receiver::http(vec![Reply::hang()]);
    let healthy = Receiver::http(vec![Reply::ok()]);
    let stuck_ep = endpoint(&mut db, &stuck, max_attempts(1));
    let healthy_ep = endpoint(&mut db, &healthy, EndpointOpts::default());

    let before_commit = Instant::now();
    let mut tx = db.transaction().unwrap();
    let stuck_id = enqueue(&mut tx, stuck_ep.id, &json!({"to": "stuck"}));
    enqueue_seq(&mut tx, healthy_ep.id, 5);
    tx.commit().unwrap();
    let first = healthy.wait_for_requests(5, HTTP_TIMEOUT);
    let stuck_at = stuck.wait_for_requests(1, HTTP_TIMEOUT)[0].at;
    // While the stuck request is still in flight, a second wave must not wait for it.
    let second_commit = Instant::now();
    enqueue_seq(&mut db, healthy_ep.id, 5);
    let second = healthy.wait_for_requests(10, HTTP_TIMEOUT);

    let first_latency = first[4].at - before_commit;
    let second_latency = second[9].at - second_commit;
    println!("healthy endpoint beside a hanging one: wave 1 {}, wave 2 {}", ms(first_latency), ms(second_latency));
    assert!(second[9].at < stuck_at + HTTP_TIMEOUT, "premise: wave 2 went out while the stuck request hung");
    let limit = HTTP_TIMEOUT / 2;
    assert!(first_latency < limit, "healthy deliveries waited for the stuck one: {}", ms(first_latency));
    assert!(second_latency < limit, "a later batch waited for the stuck request: {}", ms(second_latency));

    let d = wait_for_status(&mut db, stuck_id, "dead", SETTLE);
    let a = attempts(&mut db, stuck_id);
    println!("stuck attempt: {a:?}");
    assert!(mentions(&d.last_error, &["timeout", "timed out"]), "{d:?}");
    let took = Duration::from_millis(a[0].duration_ms.unwrap_or_default() as u64);
    assert!(took >= HTTP_TIMEOUT.mul_f64(0.9) && took < HTTP_TIMEOUT * 3, "timed out after {}", ms(took));
}

#[test]
fn commit_wakes_the_worker_without_polling() {
    let (_cluster, mut db) = start(&[("webhook_outbox.poll_interval", "60s")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let ep = endpoint(&mut db, &rx, EndpointOpts::default());
    // The worker may still be starting: the first delivery only warms up.
    enqueue(&mut db, ep.id, &json!({"warm": "up"}));
    rx.wait_for_requests(1, SETTLE);

    // Every other event emit()ted: through the intake, which the worker moves
    // at the same wake-up.
    let mut latencies: Vec<Duration> = (1..=20)
        .map(|n| {
            // Idle again: the worker is asleep on its 60 s poll.
            std::thread::sleep(Duration::from_millis(50));
            let before_commit = Instant::now();
            if n % 2 == 0 {
                db.execute("SELECT webhook_outbox.emit('test.event', $1)", &[&json!({"n": n})]).expect("emit");
            } else {
                enqueue(&mut db, ep.id, &json!({"n": n}));
            }
            rx.wait_for_requests(n + 1, Duration::from_secs(5))[n].at - before_commit
        })
        .collect();
    latencies.sort();
    println!(
        "commit → request with poll_interval 60s: p50 {}, max {}",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    );
    assert!(latencies.iter().all(|l| *l < Duration::from_secs(1)), "{latencies:?}");
}

#[test]
fn shadow_sends_nothing_and_off_creates_nothing() {
    let (cluster, mut db) = start(&[("webhook_outbox.mode", "shadow")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let ep = endpoint(&mut db, &rx, EndpointOpts::default());

    enqueue_seq(&mut db, ep.id, 3);
    let emitted: i32 = db.query_one("SELECT webhook_outbox.emit('test.event', '{}')", &[]).unwrap().get(0);
    assert_eq!(emitted, 1);
    assert_eq!(statuses(&mut db, ep.id), [("shadow".to_owned(), 4)]);
    // The paused worker still records emit()'s shadow events as deliveries.
    wait_for_intake(&mut db, Duration::from_secs(5));
    let shadow: i64 =
        db.query_one("SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'shadow'", &[]).unwrap().get(0);
    assert_eq!(shadow, 4);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.connections(), 0, "shadow mode sent something");

    cluster.set_conf("webhook_outbox.mode", "off");
    let row = db.query_one("SELECT webhook_outbox.enqueue($1, 'test.event', '{}')", &[&ep.id]).unwrap();
    assert_eq!(row.get::<_, Option<i64>>(0), None, "enqueue in mode off returns NULL");
    let emitted: i32 = db.query_one("SELECT webhook_outbox.emit('test.event', '{}')", &[]).unwrap().get(0);
    assert_eq!(emitted, 0);
    assert_eq!(statuses(&mut db, ep.id), [("shadow".to_owned(), 4)], "mode off created rows");
}

#[test]
fn switching_to_shadow_stops_sending_and_back_delivers_each_once() {
    const ROWS: i32 = 100;
    let (cluster, mut db) = start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    // 100 deliveries at 20/s: sending is still under way when the mode changes.
    let opts = EndpointOpts { rate_limit_rps: Some(20.0), ..EndpointOpts::default() };
    let ep = endpoint(&mut db, &rx, opts);
    enqueue_seq(&mut db, ep.id, ROWS);
    rx.wait_for_requests(10, SETTLE);

    let switched = Instant::now();
    cluster.set_conf("webhook_outbox.mode", "shadow");
    let shadow_row = enqueue(&mut db, ep.id, &json!({"recorded": "in shadow"}));
    std::thread::sleep(Duration::from_secs(2));
    let paused = rx.requests();
    let last = paused.last().expect("requests before the switch").at;
    match last.checked_duration_since(switched) {
        Some(after) => {
            println!("shadow: {} requests, the last {} after the switch began", paused.len(), ms(after));
            assert!(after < Duration::from_secs(1), "still sending {} after the switch", ms(after));
        }
        None => println!("shadow: {} requests, none after the switch began", paused.len()),
    }
    assert!(paused.len() < ROWS as usize, "everything was sent before the switch: the test proves nothing");
    assert_eq!(delivery(&mut db, shadow_row).status, "shadow");

    cluster.set_conf("webhook_outbox.mode", "on");
    let all_sent = wait_until(SETTLE, || {
        let sent: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook_outbox.deliveries WHERE endpoint_id = $1 AND status = 'sent'",
                &[&ep.id],
            )
            .unwrap()
            .get(0);
        sent == i64::from(ROWS)
    });
    assert!(all_sent, "not all waiting rows delivered after mode on: {:?}", statuses(&mut db, ep.id));
    std::thread::sleep(Duration::from_millis(500));
    let requests = rx.requests();
    let distinct: HashSet<_> = requests.iter().map(|r| r.json()["seq"].clone()).collect();
    println!("after mode on: {} requests for {} deliveries", requests.len(), distinct.len());
    assert_eq!(requests.len(), ROWS as usize, "each waiting delivery exactly once");
    assert_eq!(distinct.len(), ROWS as usize);
    assert_eq!(delivery(&mut db, shadow_row).status, "shadow", "a shadow row is never sent");
}

/// A storm of retries (an endpoint back from an outage) does not hold back
/// the events created since: the worker sends them with its first batch,
/// not after the thousands of retries due before them.
#[test]
fn new_events_go_out_beside_a_retry_storm() {
    const RETRIES: usize = 2000;
    const BATCH: usize = 32;
    let (_cluster, mut db) = start(&[("webhook_outbox.batch_size", "32")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let ep = endpoint(&mut db, &rx, EndpointOpts::default());
    // One transaction, so that the worker's first claim finds both.
    db.batch_execute(&format!(
        "BEGIN;
         INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, status, attempt_count,
                                                max_attempts, next_attempt_at)
         SELECT {id}, 'retry-' || g, 'test.event', jsonb_build_object('n', g), 'retry', 1, 8, now() - interval '1 hour'
         FROM generate_series(1, {RETRIES}) g;
         SELECT webhook_outbox.enqueue({id}, 'test.event', jsonb_build_object('fresh', g), 'fresh-' || g)
         FROM generate_series(1, 5) g;
         COMMIT;",
        id = ep.id
    ))
    .expect("a retry storm and five new events");
    let requests = rx.wait_for_requests(RETRIES + 5, Duration::from_secs(60));
    assert_eq!(requests.len(), RETRIES + 5);
    let fresh: Vec<usize> =
        requests.iter().enumerate().filter(|(_, r)| r.webhook_id().starts_with("fresh-")).map(|(i, _)| i).collect();
    // Up to two batches are in flight at once.
    assert_eq!(fresh.len(), 5, "{fresh:?}");
    assert!(fresh.iter().all(|&i| i < 2 * BATCH), "new events sent at places {fresh:?} of {}", requests.len());
}
