//! The SSRF guard end to end: with loopback not in `allowed_cidrs`, every
//! disguise of 127.0.0.1 is refused after resolution, permanently, with an
//! error naming the rule, and the receiver never sees a connection. Traffic
//! only ever targets loopback.

use std::fs;
use std::time::Duration;

use serde_json::json;
use webhook_outbox_it::outbox::{create_endpoint, enqueue, mentions, wait_for_status, EndpointOpts};
use webhook_outbox_it::{Cluster, Receiver, Reply};

const SETTLE: Duration = Duration::from_secs(10);
/// A hosts-file name for 127.0.0.1: resolution through /etc/hosts, not a literal.
const HOSTS_NAME: &str = "wo-ssrf-test.internal";

/// Adds `127.0.0.1 HOSTS_NAME` to /etc/hosts unless present; other lines stay.
fn ensure_hosts_entry() {
    let hosts = fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    if !hosts.lines().any(|l| l.split_whitespace().skip(1).any(|name| name == HOSTS_NAME)) {
        let sep = if hosts.ends_with('\n') || hosts.is_empty() { "" } else { "\n" };
        fs::write("/etc/hosts", format!("{hosts}{sep}127.0.0.1 {HOSTS_NAME}\n")).expect("write /etc/hosts");
    }
}

/// Sends one delivery to `url` and expects a permanent refusal naming `rule`.
fn assert_refused(db: &mut postgres::Client, url: &str, rule: &str) {
    let ep = create_endpoint(db, url, &EndpointOpts::default());
    let id = enqueue(db, ep.id, &json!({"url": url}));
    let d = wait_for_status(db, id, "dead", SETTLE);
    println!("{url}: {}", d.last_error.as_deref().unwrap_or("(no error)"));
    assert_eq!(d.attempt_count, 1, "{url}: a refusal is permanent");
    assert!(mentions(&d.last_error, &[rule]), "{url}: the error should name the rule {rule}: {d:?}");
}

#[test]
fn loopback_disguises_are_refused_unless_allowed() {
    ensure_hosts_entry();
    let cluster = Cluster::start(&[("webhook_outbox.allowed_cidrs", "")]);
    let mut db = cluster.client();
    let rx = Receiver::http(vec![Reply::ok()]);
    let disguises = ["127.0.0.1", "localhost", "127.1", "2130706433", "[::ffff:127.0.0.1]", "[::1]", HOSTS_NAME];
    for host in disguises {
        assert_refused(&mut db, &rx.url_at(host), "loopback");
    }
    assert_eq!(rx.connections(), 0, "the guard must refuse before connecting");

    // Control: the same receiver is reachable once loopback is allowed, so
    // the silence above was the guard's doing.
    cluster.set_conf("webhook_outbox.allowed_cidrs", "127.0.0.0/8");
    let ep = create_endpoint(&mut db, &rx.url_at(HOSTS_NAME), &EndpointOpts::default());
    let id = enqueue(&mut db, ep.id, &json!({"allowed": true}));
    wait_for_status(&mut db, id, "sent", SETTLE);
    assert_eq!(rx.request_count(), 1);
    // The address the name resolved to and the request went to, recorded.
    let (class, addr): (Option<String>, Option<String>) = db
        .query_one(
            "SELECT failure_class, host(remote_addr) FROM webhook_outbox.attempts WHERE delivery_id = $1",
            &[&id],
        )
        .map(|r| (r.get(0), r.get(1)))
        .expect("the attempt");
    assert_eq!((class, addr.as_deref()), (None, Some("127.0.0.1")));
}

#[test]
fn plain_http_is_refused_when_not_allowed() {
    let cluster = Cluster::start(&[]);
    let mut db = cluster.client();
    let rx = Receiver::http(vec![Reply::ok()]);
    // Created while http is allowed; the rule is checked again at send time.
    let url = rx.url();
    let ep = create_endpoint(&mut db, &url, &EndpointOpts::default());
    cluster.set_conf("webhook_outbox.allow_http", "off");
    let id = enqueue(&mut db, ep.id, &json!({"plain": "http"}));
    let d = wait_for_status(&mut db, id, "dead", SETTLE);
    println!("{url} with allow_http off: {d:?}");
    assert!(mentions(&d.last_error, &["allow_http"]), "{d:?}");
    assert_eq!(rx.connections(), 0);
    let (class, addr): (Option<String>, Option<String>) = db
        .query_one(
            "SELECT failure_class, remote_addr::text FROM webhook_outbox.attempts WHERE delivery_id = $1",
            &[&id],
        )
        .map(|r| (r.get(0), r.get(1)))
        .expect("the attempt");
    assert_eq!((class.as_deref(), addr), (Some("policy"), None), "refused before any connection");
}
