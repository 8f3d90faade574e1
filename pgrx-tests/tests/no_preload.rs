//! Without `shared_preload_libraries` (managed Postgres, external workers
//! only) the SQL API works from a fresh session, and a role cannot raise a
//! limit or flip `mode` by setting a placeholder before the library loads.

use postgres::Client;
use serde_json::json;
use webhook_outbox_it::outbox::{self, EndpointOpts};
use webhook_outbox_it::{Cluster, Receiver, Reply};

/// Runs `sql` in a new session, which has not loaded the library yet.
fn fresh(cluster: &Cluster, user: &str, sql: &str) -> Result<Vec<postgres::SimpleQueryMessage>, postgres::Error> {
    let mut db: Client = cluster.connect(user, "postgres");
    db.simple_query(sql)
}

fn first_value(rows: &[postgres::SimpleQueryMessage]) -> Option<String> {
    rows.iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
        _ => None,
    })?
}

#[test]
fn the_api_works_in_a_fresh_session_without_preload() {
    let cluster = Cluster::start(&[("shared_preload_libraries", "")]);
    assert!(cluster.worker_pids().is_empty(), "no worker without preload");
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    let ep = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    drop(db);

    for sql in [
        format!("SELECT webhook_outbox.enqueue({}, 'a.b', '{{\"n\": 1}}')", ep.id),
        "SELECT webhook_outbox.emit('a.b', '{\"n\": 2}')".to_owned(),
        "SELECT webhook_outbox.set_rollout('f', 100)".to_owned(),
        "SELECT webhook_outbox.should_emit_event('f', 'subject-1')".to_owned(),
        "SELECT webhook_outbox.emit('a.b', '{\"n\": 3}', subject_id => 'x', flag => 'f')".to_owned(),
        "SELECT count(*) FROM webhook_outbox.count_pending_by_status()".to_owned(),
        "SELECT length(webhook_outbox.metrics())".to_owned(),
        "SELECT count(*) FROM webhook_outbox.v_webhook_health_dashboard".to_owned(),
        "SELECT * FROM webhook_outbox.cleanup(dry_run => true)".to_owned(),
    ] {
        fresh(&cluster, "postgres", &sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    // An external worker's round trip, each step in a fresh session.
    let claimed =
        fresh(&cluster, "postgres", "SELECT id || ',' || lease_token FROM webhook_outbox.get_ready_deliveries(1)")
            .expect("get_ready_deliveries");
    let claimed = first_value(&claimed).expect("a claimed delivery");
    let (id, token) = claimed.split_once(',').expect("id,token");
    let status = fresh(&cluster, "postgres", &format!("SELECT webhook_outbox.record_attempt({id}, '{token}', 200, 3)"))
        .expect("record_attempt");
    assert_eq!(first_value(&status).as_deref(), Some("sent"));
    // And run_once delivers the rest from a session.
    let attempted = fresh(&cluster, "postgres", "SELECT webhook_outbox.run_once()").expect("run_once");
    assert_eq!(first_value(&attempted).as_deref(), Some("2"));
    assert_eq!(rx.request_count(), 2);
}

#[test]
fn placeholders_set_before_the_library_loads_change_nothing() {
    let cluster = Cluster::start(&[("shared_preload_libraries", "")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut db = cluster.client();
    outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    db.batch_execute(
        "CREATE ROLE app LOGIN;
         GRANT USAGE ON SCHEMA webhook_outbox TO app;
         GRANT EXECUTE ON FUNCTION webhook_outbox.emit(text, jsonb, text, text, text) TO app;",
    )
    .expect("app role");

    // A payload over the default limit (256 kB), with the limit "raised" first.
    let big = json!({ "blob": "x".repeat(300 * 1024) }).to_string();
    let err = fresh(
        &cluster,
        "app",
        &format!("SET webhook_outbox.max_payload_bytes = '1000000000'; SELECT webhook_outbox.emit('a.b', '{big}')"),
    )
    .expect_err("the placeholder must not raise the limit");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("54000"), "{err:?}");

    // mode "off" and max_attempts 100 set by app: emit still records the
    // event, with the server's max_attempts.
    let created = fresh(
        &cluster,
        "app",
        "SET webhook_outbox.mode = 'off'; SET webhook_outbox.max_attempts = '100';
         SELECT webhook_outbox.emit('a.b', '{}', event_id => 'placeholders')",
    )
    .expect("emit");
    assert_eq!(first_value(&created).as_deref(), Some("1"), "mode stays on");
    // No worker: a claim would move it; so does this.
    db.batch_execute("SELECT webhook_outbox._route_intake(100)").expect("route");
    let max_attempts: i32 = db
        .query_one("SELECT max_attempts FROM webhook_outbox.deliveries WHERE event_id = 'placeholders'", &[])
        .expect("the row")
        .get(0);
    assert_eq!(max_attempts, 5, "the server's: one more than the steps of its retry_schedule (BASE_CONF)");
}
