//! An external worker with no table rights at all: EXECUTE on
//! get_ready_deliveries() and record_attempt() is enough to deliver, signed
//! with a secret it never sees.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webhook_outbox_it::outbox::{create_endpoint, enqueue, EndpointOpts};
use webhook_outbox_it::{Cluster, Receiver, Reply};

/// POSTs `body` with `headers` to a plain-http `url` on loopback; returns the
/// status and the time it took. A minimal client: the worker under test is this
/// test, not the extension's.
fn post(url: &str, headers: &[(String, String)], body: &str) -> (i32, i32) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let started = Instant::now();
    let mut stream = TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, started.elapsed().as_millis() as i32)
}

#[test]
fn a_role_with_only_execute_delivers_signed_requests() {
    // The worker serves another database: this one is the external worker's.
    let cluster = Cluster::start(&[("webhook_outbox.database", "elsewhere")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut admin = cluster.client();
    let ep = create_endpoint(
        &mut admin,
        &rx.url(),
        &EndpointOpts { headers: Some(json!({"X-Tenant": "acme"})), ..Default::default() },
    );
    let ids: Vec<i64> = (0..3).map(|n| enqueue(&mut admin, ep.id, &json!({"n": n}))).collect();
    admin
        .batch_execute(
            "CREATE ROLE ext_worker LOGIN;
             GRANT USAGE ON SCHEMA webhook_outbox TO ext_worker;
             GRANT EXECUTE ON FUNCTION webhook_outbox.get_ready_deliveries(integer, interval),
                                       webhook_outbox.record_attempt(bigint, uuid, integer, integer, text, interval, text)
             TO ext_worker;",
        )
        .expect("the external worker's role");

    let mut worker = cluster.connect("ext_worker", "postgres");
    for denied in [
        "SELECT secret FROM webhook_outbox.endpoints",
        "SELECT payload FROM webhook_outbox.deliveries",
        "UPDATE webhook_outbox.deliveries SET status = 'sent'",
    ] {
        let err = worker.batch_execute(denied).expect_err(denied);
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42501"), "{denied}: {err}");
    }
    let rows = worker
        .query(
            "SELECT id, lease_token::text, url, headers, body, webhook_headers FROM webhook_outbox.get_ready_deliveries(10)",
            &[],
        )
        .expect("claim");
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let (id, lease, url, body): (i64, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(4));
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        for set in [row.get::<_, Value>(3), row.get::<_, Value>(5)] {
            for (name, value) in set.as_object().expect("an object") {
                headers.push((name.clone(), value.as_str().expect("a string").to_owned()));
            }
        }
        let (status, ms) = post(&url, &headers, &body);
        let recorded: String = worker
            .query_one("SELECT webhook_outbox.record_attempt($1, $2::text::uuid, $3, $4)", &[&id, &lease, &status, &ms])
            .expect("record_attempt")
            .get(0);
        assert_eq!(recorded, "sent");
    }
    let requests = rx.wait_for_requests(3, Duration::from_secs(5));
    assert_eq!(requests.len(), 3);
    for r in &requests {
        r.verify_signature(&ep.secret).expect("the official library verifies what the external worker sent");
        assert_eq!(r.header("x-tenant"), Some("acme"));
    }
    let sent: i64 = admin
        .query_one("SELECT count(*) FROM webhook_outbox.deliveries WHERE id = ANY($1) AND status = 'sent'", &[&ids])
        .expect("statuses")
        .get(0);
    assert_eq!(sent, 3);
}
