//! Operational events reach a LISTENing session and a real operations
//! receiver, each once: here an endpoint that answers 410 Gone.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use serde_json::{json, Value};
use webhook_outbox_it::outbox::{create_endpoint, enqueue, EndpointOpts};
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

    let mut heard: Vec<Value> = Vec::new();
    wait_until(Duration::from_secs(5), || {
        let mut notes = listener.notifications();
        let mut it = notes.timeout_iter(Duration::from_millis(200));
        while let Ok(Some(n)) = it.next() {
            assert_eq!(n.channel(), "webhook_outbox_events");
            heard.push(serde_json::from_str(n.payload()).expect("a JSON payload"));
        }
        !heard.is_empty()
    });
    // A while longer: nothing is heard twice.
    std::thread::sleep(Duration::from_secs(2));
    let mut notes = listener.notifications();
    let mut it = notes.timeout_iter(Duration::from_millis(200));
    while let Ok(Some(n)) = it.next() {
        heard.push(serde_json::from_str(n.payload()).expect("a JSON payload"));
    }
    let types: Vec<&str> = heard.iter().map(|n| n["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["endpoint.disabled"], "{heard:?}");
    assert_eq!(heard[0]["id"], body["id"], "the same event");
    assert_eq!(ops_rx.request_count(), 1, "the operations receiver heard it once");
}
