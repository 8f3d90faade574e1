//! HTTPS through rustls: a private CA given by `webhook_outbox.ca_file` is
//! trusted; a certificate from another CA, or a self-signed one, is refused.

use std::time::Duration;

use serde_json::json;
use webhook_outbox_it::outbox::{create_endpoint, enqueue, mentions, wait_for_status, EndpointOpts};
use webhook_outbox_it::{Cluster, Receiver, Reply, ServerCert, TestCa};

const SETTLE: Duration = Duration::from_secs(10);

fn cluster_trusting(ca: &TestCa) -> Cluster {
    let ca_file = ca.pem_path().display().to_string();
    Cluster::start(&[("webhook_outbox.ca_file", &ca_file), ("webhook_outbox.allow_http", "off")])
}

#[test]
fn https_with_the_private_ca_is_delivered() {
    let ca = TestCa::new("webhook_outbox test CA");
    let cluster = cluster_trusting(&ca);
    let mut db = cluster.client();
    let rx = Receiver::https(vec![Reply::ok()], ca.server_cert());
    let ep = create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    let id = enqueue(&mut db, ep.id, &json!({"over": "tls"}));

    wait_for_status(&mut db, id, "sent", SETTLE);
    let req = rx.wait_for_requests(1, SETTLE).remove(0);
    req.verify_signature(&ep.secret).expect("signed over TLS too");
}

#[test]
fn untrusted_certificates_are_refused() {
    let ca = TestCa::new("webhook_outbox test CA");
    let cluster = cluster_trusting(&ca);
    let mut db = cluster.client();
    let certs = [("another CA", TestCa::new("untrusted CA").server_cert()), ("self-signed", ServerCert::self_signed())];
    for (what, cert) in certs {
        let rx = Receiver::https(vec![Reply::ok()], cert);
        let opts = EndpointOpts { max_attempts: Some(1), ..EndpointOpts::default() };
        let ep = create_endpoint(&mut db, &rx.url(), &opts);
        let id = enqueue(&mut db, ep.id, &json!({"cert": what}));

        let d = wait_for_status(&mut db, id, "dead", SETTLE);
        println!("{what}: {}", d.last_error.as_deref().unwrap_or("(no error)"));
        assert!(mentions(&d.last_error, &["certificate"]), "{what}: the error should mention the certificate: {d:?}");
        let class: Option<String> = db
            .query_one("SELECT failure_class FROM webhook_outbox.attempts WHERE delivery_id = $1", &[&id])
            .expect("the attempt")
            .get(0);
        assert_eq!(class.as_deref(), Some("tls"), "{what}");
        assert!(rx.connections() > 0, "{what}: the worker should have tried the handshake");
        assert_eq!(rx.request_count(), 0, "{what}: no request may pass an untrusted certificate");
    }
}
