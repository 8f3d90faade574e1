//! HTTP/2: nginx with `http2` on TLS (it offers h2 by ALPN) gets the
//! deliveries as streams of shared connections, signed as over HTTP/1.1, with
//! the per-endpoint rate limit as before. nginx proxies each request to a
//! receiver that verifies the signature with the official library.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use webhook_outbox_it::outbox::{create_endpoint, enqueue_seq, wait_for_all, EndpointOpts};
use webhook_outbox_it::{Cluster, Nginx, Receiver, Reply, TestCa};

const SETTLE: Duration = Duration::from_secs(20);

#[test]
fn deliveries_to_an_h2_receiver_share_connections_and_stay_signed() {
    let ca = TestCa::new("webhook_outbox h2 CA");
    let ca_file = ca.pem_path().display().to_string();
    let cluster = Cluster::start(&[("webhook_outbox.ca_file", &ca_file), ("webhook_outbox.concurrency", "16")]);
    let mut db = cluster.client();
    let rx = Receiver::http(vec![Reply::ok()]);
    // nginx closes each connection after 50 requests: the worker must move
    // to a new one without losing or repeating deliveries.
    let nginx = Nginx::h2_proxy(&ca, rx.port(), 50);

    let fast =
        create_endpoint(&mut db, &nginx.url(), &EndpointOpts { rate_limit_rps: Some(0.0), ..EndpointOpts::default() });
    enqueue_seq(&mut db, fast.id, 400);
    wait_for_all(&mut db, fast.id, "sent", SETTLE);

    let requests = rx.wait_for_requests(400, SETTLE);
    for req in &requests {
        req.verify_signature(&fast.secret).expect("signature verified by the official library");
    }
    let ids: HashSet<&str> = requests.iter().map(|r| r.webhook_id()).collect();
    assert_eq!((requests.len(), ids.len()), (400, 400), "each delivery exactly once");
    // Streams nginx refused with its GOAWAY went again at once, on a new
    // connection: no attempt failed.
    let (attempts, failed): (i64, i64) = {
        let row = db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE status_code IS DISTINCT FROM 200)
                 FROM webhook_outbox.attempts WHERE endpoint_id = $1",
                &[&fast.id],
            )
            .expect("attempts");
        (row.get(0), row.get(1))
    };
    assert_eq!((attempts, failed), (400, 0), "one successful attempt per delivery");

    let log = nginx.access_log();
    assert_eq!(log.len(), 400);
    assert!(log.iter().all(|l| l.protocol == "HTTP/2.0" && l.status == 200), "{:?}", &log[..3]);
    let connections: HashSet<u64> = log.iter().map(|l| l.connection).collect();
    println!("400 deliveries over HTTP/2 on {} connections (nginx closes each after 50 requests)", connections.len());
    // 8 connections at the very least; one per request in flight (16) for
    // each of those would be 128.
    assert!(connections.len() <= 8 + 16, "{} connections: requests do not share them", connections.len());

    // The per-endpoint rate limit holds over HTTP/2 as over HTTP/1.1.
    let limited =
        create_endpoint(&mut db, &nginx.url(), &EndpointOpts { rate_limit_rps: Some(10.0), ..EndpointOpts::default() });
    let before = Instant::now();
    enqueue_seq(&mut db, limited.id, 20);
    wait_for_all(&mut db, limited.id, "sent", SETTLE);
    let took = before.elapsed();
    println!("20 deliveries at 10 rps over HTTP/2: {took:?}");
    assert!(took >= Duration::from_millis(1500), "rate limit not applied: {took:?}");
    for req in rx.requests().iter().skip(400) {
        req.verify_signature(&limited.secret).expect("signed");
    }
}
