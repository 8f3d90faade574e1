//! Operational events reach a LISTENing session and a real operations
//! receiver, each once: an endpoint that answers 410 Gone, and one that
//! fails, exhausts deliveries, opens its circuit and recovers.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use serde_json::{json, Value};
use webhook_outbox_it::outbox::{circuit_state, create_endpoint, enqueue, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster, Receiver, Reply};

#[test]
fn a_listener_and_the_operations_receiver_hear_each_event_once() {
    let cluster = Cluster::start(&[]);
    let gone = Receiver::http(vec![Reply::status(410)]);
    let ops_rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let ops = create_endpoint(&mut db, &ops_rx.url(), &EndpointOpts::default());
    let ep = create_endpoint(&mut db, &gone.url(), &EndpointOpts { max_attempts: Some(1), ..Default::default() });
    cluster.set_conf("webhook_outbox.operations_endpoint", &ops.id.to_string());
    let mut listener = cluster.client();
    listener.batch_execute("LISTEN webhook_outbox_events").expect("listen");

    enqueue(&mut db, ep.id, &json!({"order": 1}));
    let requests = ops_rx.wait_for_requests(1, Duration::from_secs(10));
    assert_eq!(requests.len(), 1, "the operations receiver got nothing");
    let webhook = &requests[0];
    webhook.verify_signature(&ops.secret).expect("signed like any webhook");
    let body = webhook.json();
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["endpoint_id"], json!(ep.id));
    assert_eq!(body["data"]["reason"], "the receiver answered 410 Gone");

    let heard = hear(&mut listener, 1);
    let types: Vec<&str> = heard.iter().map(|n| n["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["endpoint.disabled"], "{heard:?}");
    assert_eq!(heard[0]["id"], body["id"], "the same event");
    assert_eq!(ops_rx.request_count(), 1, "the operations receiver heard it once");
}

/// What `listener` hears on webhook_outbox_events: at least `n` payloads
/// (waiting up to 10 s), then whatever comes in two seconds more, so that an
/// event heard twice shows.
fn hear(listener: &mut Client, n: usize) -> Vec<Value> {
    let mut heard: Vec<Value> = Vec::new();
    let mut listen = |heard: &mut Vec<Value>| {
        let mut notes = listener.notifications();
        let mut it = notes.timeout_iter(Duration::from_millis(200));
        while let Ok(Some(note)) = it.next() {
            assert_eq!(note.channel(), "webhook_outbox_events");
            heard.push(serde_json::from_str(note.payload()).expect("a JSON payload"));
        }
    };
    wait_until(Duration::from_secs(10), || {
        listen(&mut heard);
        heard.len() >= n
    });
    std::thread::sleep(Duration::from_secs(2));
    listen(&mut heard);
    heard
}

fn sorted_types(events: &[Value]) -> Vec<String> {
    let mut types: Vec<String> = events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect();
    types.sort();
    types
}

/// Five failures in a row: each delivery exhausted (one attempt each), the
/// endpoint failing after three, its circuit opened after five; then a probe
/// that succeeds closes the circuit and the endpoint recovers. Each of those
/// is heard once, by both.
#[test]
fn every_kind_of_event_is_heard_once() {
    let cluster =
        Cluster::start(&[("webhook_outbox.failing_after", "3"), ("webhook_outbox.circuit_failure_threshold", "5")]);
    let flaky = Receiver::http(vec![
        Reply::status(500),
        Reply::status(500),
        Reply::status(500),
        Reply::status(500),
        Reply::status(500),
        Reply::ok(),
    ]);
    let ops_rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let ops = create_endpoint(&mut db, &ops_rx.url(), &EndpointOpts::default());
    let ep = create_endpoint(&mut db, &flaky.url(), &EndpointOpts { max_attempts: Some(1), ..Default::default() });
    cluster.set_conf("webhook_outbox.operations_endpoint", &ops.id.to_string());
    let mut listener = cluster.client();
    listener.batch_execute("LISTEN webhook_outbox_events").expect("listen");

    for n in 0..5 {
        enqueue(&mut db, ep.id, &json!({"order": n}));
        flaky.wait_for_requests(n + 1, Duration::from_secs(10));
    }
    // Once the circuit is open, the next event waits for its probe (sent
    // earlier, its success could be folded with a failure in one settle).
    assert!(wait_until(Duration::from_secs(10), || circuit_state(&mut db, ep.id) == "open"), "the circuit opened");
    enqueue(&mut db, ep.id, &json!({"order": 5}));
    let expected = [
        "circuit.closed",
        "circuit.opened",
        "delivery.exhausted",
        "delivery.exhausted",
        "delivery.exhausted",
        "delivery.exhausted",
        "delivery.exhausted",
        "endpoint.failing",
        "endpoint.recovered",
    ];
    let heard = hear(&mut listener, expected.len());
    assert_eq!(sorted_types(&heard), expected, "{heard:?}");
    assert!(heard.iter().all(|e| e["endpoint_id"] == json!(ep.id)), "{heard:?}");

    let webhooks = ops_rx.wait_for_requests(expected.len(), Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ops_rx.request_count(), expected.len(), "each event sent once");
    for w in &webhooks {
        w.verify_signature(&ops.secret).expect("signed like any webhook");
    }
    let bodies: Vec<Value> = webhooks.iter().map(|w| w.json()).collect();
    assert_eq!(sorted_types(&bodies), expected);
    let ids = |events: &[Value]| {
        let mut ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap_or_default()).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids(&heard), ids(&bodies), "the same events");
}
