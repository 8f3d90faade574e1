//! The Prometheus scrape endpoint served by worker 0 on
//! `webhook_outbox.metrics_listen`, read with a plain HTTP client, and the
//! same text as `SELECT webhook_outbox.metrics()`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::json;
use webhook_outbox_it::outbox::{self, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster};

/// `GET path` over a fresh connection; (status line, body).
fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

#[test]
fn metrics_are_served_over_http_and_follow_the_queue() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let listen = format!("127.0.0.1:{port}");
    // Shadow mode: rows stay where they are, so the numbers are known.
    let cluster = Cluster::start(&[("webhook_outbox.metrics_listen", &listen), ("webhook_outbox.mode", "shadow")]);
    let mut db = cluster.client();
    let endpoint = outbox::create_endpoint(&mut db, "http://127.0.0.1:9/unused", &EndpointOpts::default());
    for i in 0..3 {
        outbox::enqueue(&mut db, endpoint.id, &json!({ "i": i }));
    }

    assert!(wait_until(Duration::from_secs(10), || get(port, "/metrics").is_ok()), "listener on {listen}");
    let (status, body) = get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for name in [
        "webhook_deliveries_total",
        "webhook_delivery_duration_seconds",
        "webhook_queue_depth",
        "webhook_oldest_pending_age_seconds",
        "webhook_circuit_open",
        "webhook_worker_up",
    ] {
        assert!(body.contains(&format!("# TYPE {name}")), "{name} missing from:\n{body}");
    }
    assert!(
        body.lines().any(|l| l.starts_with("webhook_queue_depth{status=\"shadow\"} 3")),
        "three shadow rows in:\n{body}"
    );
    assert!(body.lines().any(|l| l.starts_with("webhook_worker_up{worker=\"0\"} 1")), "worker up in:\n{body}");

    // A fresh rendering per scrape, not a cached one.
    outbox::enqueue(&mut db, endpoint.id, &json!({ "i": 3 }));
    let (_, body) = get(port, "/metrics").expect("second scrape");
    assert!(body.lines().any(|l| l.starts_with("webhook_queue_depth{status=\"shadow\"} 4")), "four now:\n{body}");

    let (status, _) = get(port, "/other").expect("GET /other");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
}
