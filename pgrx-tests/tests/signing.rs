//! Signatures as receivers check them: a secret rotation, verified with the
//! official Standard Webhooks library holding the old or the new secret, and
//! ed25519 (v1a) signatures verified with ed25519-dalek (the worker signs with
//! ring) against the public key public_keys() shows.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::json;
use webhook_outbox_it::outbox::{create_endpoint, enqueue, wait_for_status, EndpointOpts};
use webhook_outbox_it::{Cluster, Receiver, Reply, Request};

const SETTLE: Duration = Duration::from_secs(10);

/// Sends one event and returns the request that carried it.
fn one_request(db: &mut postgres::Client, rx: &Receiver, endpoint: i64, n: i32) -> Request {
    let id = enqueue(db, endpoint, &json!({ "n": n }));
    wait_for_status(db, id, "sent", SETTLE);
    let requests = rx.wait_for_requests(n as usize, SETTLE);
    requests.into_iter().nth(n as usize - 1).expect("the request")
}

#[test]
fn during_a_rotation_either_secret_verifies_then_only_the_new_one() {
    let cluster = Cluster::start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let ep = create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    let before = one_request(&mut db, &rx, ep.id, 1);
    before.verify_signature(&ep.secret).expect("the only secret verifies");
    assert_eq!(before.header("webhook-signature").map(|s| s.split(' ').count()), Some(1));

    let new: String = db
        .query_one("SELECT webhook_outbox.rotate_secret($1, overlap => '3 seconds')", &[&ep.id])
        .expect("rotate")
        .get(0);
    let during = one_request(&mut db, &rx, ep.id, 2);
    let header = during.header("webhook-signature").expect("signature");
    assert_eq!(header.split(' ').count(), 2, "{header}");
    during.verify_signature(&ep.secret).expect("a receiver still holding the old secret");
    during.verify_signature(&new).expect("a receiver that switched to the new secret");

    std::thread::sleep(Duration::from_millis(3_500));
    let after = one_request(&mut db, &rx, ep.id, 3);
    after.verify_signature(&new).expect("the new secret");
    assert!(after.verify_signature(&ep.secret).is_err(), "the old secret no longer verifies");
    assert_eq!(after.header("webhook-signature").map(|s| s.split(' ').count()), Some(1));
}

/// Each `v1a` signature of the request, checked with ed25519-dalek against
/// `public_keys`, over `{id}.{timestamp}.{body}`; returns how many verified.
fn verify_v1a(request: &Request, public_keys: &[String]) -> usize {
    let message = [
        request.webhook_id().as_bytes(),
        b".",
        request.header("webhook-timestamp").expect("timestamp").as_bytes(),
        b".",
        &request.body,
    ]
    .concat();
    let signatures: Vec<Signature> = request
        .header("webhook-signature")
        .expect("signature")
        .split(' ')
        .map(|s| {
            let raw = STANDARD.decode(s.strip_prefix("v1a,").expect("a v1a signature")).expect("base64");
            Signature::from_slice(&raw).expect("64 bytes")
        })
        .collect();
    let keys: Vec<VerifyingKey> = public_keys
        .iter()
        .map(|k| {
            let raw: [u8; 32] =
                STANDARD.decode(k.strip_prefix("whpk_").expect("whpk_")).expect("base64").try_into().expect("32 bytes");
            VerifyingKey::from_bytes(&raw).expect("a public key")
        })
        .collect();
    signatures.iter().filter(|sig| keys.iter().any(|k| k.verify_strict(&message, sig).is_ok())).count()
}

#[test]
fn v1a_signatures_verify_with_the_public_key() {
    let cluster = Cluster::start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let id: i64 = db
        .query_one("SELECT webhook_outbox.create_endpoint($1, signing => 'v1a', rate_limit_rps => 0)", &[&rx.url()])
        .expect("endpoint")
        .get(0);
    let public: String =
        db.query_one("SELECT public_key FROM webhook_outbox.public_keys($1)", &[&id]).expect("public key").get(0);
    let first = one_request(&mut db, &rx, id, 1);
    assert_eq!(verify_v1a(&first, std::slice::from_ref(&public)), 1);
    // Another key's signature, or another body, does not verify.
    let other = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".to_owned();
    assert_eq!(verify_v1a(&first, std::slice::from_ref(&other)), 0);
    let tampered = Request { body: b"{\"n\": 2}".to_vec(), ..first.clone() };
    assert_eq!(verify_v1a(&tampered, std::slice::from_ref(&public)), 0);

    // Rotated: both keys sign during the overlap, each verifiable.
    let next: String = db.query_one("SELECT webhook_outbox.rotate_secret($1)", &[&id]).expect("rotate").get(0);
    let during = one_request(&mut db, &rx, id, 2);
    assert_eq!(verify_v1a(&during, &[next.clone(), public.clone()]), 2);
    assert_eq!(verify_v1a(&during, std::slice::from_ref(&next)), 1);
}
