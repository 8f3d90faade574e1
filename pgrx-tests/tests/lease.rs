//! A lease is an ownership token: a request leaves only after its claim has
//! committed, and never while another lease on the same delivery runs.

use std::collections::HashMap;
use std::time::Duration;

use webhook_outbox_it::outbox::{self, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster, Receiver, Reply};

#[test]
fn a_queued_job_past_its_lease_is_never_sent_twice_at_once() {
    // Two workers, one request at a time each, every request taking most of
    // the timeout: a batch's later jobs wait in their worker's queue longer
    // than their lease allows, and once a lease ends the other worker claims
    // the delivery. (lease 1s is raised by the workers to http_timeout + 2 s.)
    const TAKES: Duration = Duration::from_millis(900);
    let cluster = Cluster::start(&[
        ("webhook_outbox.workers", "2"),
        ("webhook_outbox.concurrency", "1"),
        ("webhook_outbox.lease", "1s"),
        ("webhook_outbox.http_timeout", "1s"),
    ]);
    let rx = Receiver::http(vec![Reply::ok().after(TAKES)]);
    let mut db = cluster.client();
    let ep = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    let ids = outbox::enqueue_seq(&mut db, ep.id, 12);
    for id in &ids {
        outbox::wait_for_status(&mut db, *id, "sent", Duration::from_secs(60));
    }
    let mut arrivals: HashMap<String, Vec<std::time::Instant>> = HashMap::new();
    for r in rx.requests() {
        arrivals.entry(r.webhook_id().to_owned()).or_default().push(r.at);
    }
    assert_eq!(arrivals.len(), ids.len(), "every delivery reached the receiver");
    for (id, mut at) in arrivals {
        at.sort();
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            // The receiver stamps arrival; the first request was still running.
            assert!(gap >= TAKES, "{id} was sent again {gap:?} after itself, while the first request ran");
        }
    }
}

#[test]
fn an_error_after_the_claim_sends_nothing() {
    let cluster = Cluster::start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    // A rate limit makes the claim give two of the three rows back in the
    // same transaction; a trigger fails that, after the first was admitted.
    let ep =
        outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts { rate_limit_rps: Some(1.0), ..Default::default() });
    db.batch_execute(
        "CREATE FUNCTION public.fail_release() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.attempt_count < OLD.attempt_count THEN
                 RAISE EXCEPTION 'injected failure after the claim';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER fail_release BEFORE UPDATE ON webhook_outbox.deliveries
         FOR EACH ROW EXECUTE FUNCTION public.fail_release();",
    )
    .expect("trigger");
    let ids = outbox::enqueue_seq(&mut db, ep.id, 3);
    assert!(
        wait_until(Duration::from_secs(10), || cluster.log().contains("injected failure after the claim")),
        "the claim did not fail"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rx.request_count(), 0, "a request left for a claim that was rolled back");
    for id in &ids {
        assert_eq!(outbox::delivery(&mut db, *id).attempt_count, 0, "the lease was rolled back");
    }

    db.batch_execute("DROP TRIGGER fail_release ON webhook_outbox.deliveries").expect("drop trigger");
    for id in &ids {
        outbox::wait_for_status(&mut db, *id, "sent", Duration::from_secs(20));
    }
    assert_eq!(rx.request_count(), 3, "each sent once");
}

#[test]
fn slow_receivers_leave_slots_for_a_fast_one() {
    // Two receivers answer 2xx just under the timeout; each has a backlog,
    // and so has a fast one, all claimed in one batch.
    let cluster = Cluster::start(&[("webhook_outbox.http_timeout", "4s"), ("webhook_outbox.lease", "20s")]);
    let slow_a = Receiver::http(vec![Reply::ok().after(Duration::from_millis(3500))]);
    let slow_b = Receiver::http(vec![Reply::ok().after(Duration::from_millis(3500))]);
    let fast = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let a = outbox::create_endpoint(&mut db, &slow_a.url(), &EndpointOpts::default());
    let b = outbox::create_endpoint(&mut db, &slow_b.url(), &EndpointOpts::default());
    let f = outbox::create_endpoint(&mut db, &fast.url(), &EndpointOpts::default());
    db.execute(
        "SELECT webhook_outbox.enqueue(e, 't', jsonb_build_object('i', i))
         FROM unnest(ARRAY[$1, $2, $3]::bigint[]) e, generate_series(1, 100) i",
        &[&a.id, &b.id, &f.id],
    )
    .expect("backlogs");
    outbox::wait_for_all(&mut db, f.id, "sent", Duration::from_secs(20));
    let worst_ms: f64 = db
        .query_one(
            "SELECT (extract(epoch FROM max(a.attempted_at - d.created_at)) * 1000)::float8
             FROM webhook_outbox.attempts a JOIN webhook_outbox.deliveries d ON d.id = a.delivery_id
             WHERE a.endpoint_id = $1",
            &[&f.id],
        )
        .expect("latency")
        .get::<_, f64>(0);
    println!("fast endpoint beside two slow ones: slowest delivery {worst_ms:.0} ms after its commit");
    // Without its share, it would wait for a slow request to end (3.5 s).
    assert!(worst_ms < 2000.0, "the slow endpoints held the fast one up: {worst_ms:.0} ms");
}

#[test]
fn extreme_timestamps_in_any_row_do_not_stop_the_worker() {
    let cluster = Cluster::start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let good = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    let odd = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    cluster.set_conf("webhook_outbox.mode", "shadow");
    let far = outbox::enqueue(&mut db, odd.id, &serde_json::json!({"far": true}));
    let old = outbox::enqueue(&mut db, good.id, &serde_json::json!({"old": true}));
    // Rows a role with table rights could write: infinite and far-off times
    // in the outbox and in the health the settle reads back.
    db.batch_execute(&format!(
        "UPDATE webhook_outbox.deliveries SET status = 'pending', next_attempt_at = 'infinity' WHERE id = {far};
         UPDATE webhook_outbox.deliveries SET status = 'pending', created_at = '-infinity',
                next_attempt_at = '-infinity' WHERE id = {old};
         UPDATE webhook_outbox.health_metrics SET last_success_at = 'infinity', last_failure_at = '-infinity',
                circuit_opened_at = '294276-12-31' WHERE webhook_id = {};
         UPDATE webhook_outbox.health_metrics SET circuit_state = 'open', circuit_opened_at = 'infinity'
         WHERE webhook_id = {};",
        good.id, odd.id
    ))
    .expect("extreme rows");
    cluster.set_conf("webhook_outbox.mode", "on");
    outbox::wait_for_status(&mut db, old, "sent", Duration::from_secs(10));
    let fresh = outbox::enqueue(&mut db, good.id, &serde_json::json!({"fresh": true}));
    outbox::wait_for_status(&mut db, fresh, "sent", Duration::from_secs(10));
    assert_eq!(outbox::delivery(&mut db, far).status, "pending", "an infinitely late row waits");
    assert!(!cluster.log().contains("webhook_outbox worker 0: claim"), "a claim failed:\n{}", cluster.log());
    assert!(!cluster.log().contains("webhook_outbox worker 0: settle"), "a settle failed:\n{}", cluster.log());
}

#[test]
fn a_health_row_another_session_holds_stalls_no_delivery() {
    let cluster = Cluster::start(&[]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let ep = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    // An external worker reports a result and stays idle in its transaction,
    // holding the endpoint's health row.
    let mut external = cluster.client();
    let mut held = external.transaction().expect("begin");
    held.query("SELECT webhook_outbox.update_webhook_health($1, 200, 5)", &[&ep.id]).expect("update_webhook_health");

    let ids = outbox::enqueue_seq(&mut db, ep.id, 20);
    // Sooner than the worker's lock_timeout (5 s): the settle did not wait.
    for id in &ids {
        outbox::wait_for_status(&mut db, *id, "sent", Duration::from_secs(4));
    }
    assert_eq!(rx.request_count(), 20, "each sent once, none sent again");

    // Once the row is free, a later settle folds the held-back results in.
    held.rollback().expect("rollback");
    let last = outbox::enqueue(&mut db, ep.id, &serde_json::json!({"last": true}));
    outbox::wait_for_status(&mut db, last, "sent", Duration::from_secs(5));
    let counted = wait_until(Duration::from_secs(5), || {
        let total: i64 = db
            .query_one("SELECT total_deliveries FROM webhook_outbox.health_metrics WHERE webhook_id = $1", &[&ep.id])
            .expect("health")
            .get(0);
        total == 21
    });
    assert!(counted, "the health of the held-back results was not recorded");
}
