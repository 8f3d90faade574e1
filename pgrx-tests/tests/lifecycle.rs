//! Endpoint changes against concurrent writers: an operator's open
//! transaction never holds back the application, and an enqueue() that waited
//! for a delete_endpoint() writes nothing for the deleted endpoint.

use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use webhook_outbox_it::outbox::{create_endpoint, EndpointOpts};
use webhook_outbox_it::{Cluster, Receiver, Reply};

#[test]
fn an_open_endpoint_change_does_not_block_enqueue() {
    let cluster = Cluster::start(&[("webhook_outbox.database", "elsewhere")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut operator = cluster.client();
    let ep = create_endpoint(&mut operator, &rx.url(), &EndpointOpts::default());
    operator.batch_execute("BEGIN").expect("begin");
    operator
        .batch_execute(&format!("SELECT webhook_outbox.update_endpoint({}, rate_limit_rps => 5)", ep.id))
        .expect("update, left open");
    let mut app = cluster.client();
    app.batch_execute("SET statement_timeout = '3s'").expect("timeout");
    app.query_one("SELECT webhook_outbox.enqueue($1, 'test.event', $2)", &[&ep.id, &json!({"n": 1})])
        .expect("enqueue does not wait for the operator's transaction");
    operator.batch_execute("COMMIT").expect("commit");
}

#[test]
fn an_enqueue_that_waited_for_a_delete_writes_nothing() {
    let cluster = Cluster::start(&[("webhook_outbox.database", "elsewhere")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut operator = cluster.client();
    let ep = create_endpoint(&mut operator, &rx.url(), &EndpointOpts::default());
    operator.batch_execute("BEGIN").expect("begin");
    let dead: i64 =
        operator.query_one("SELECT webhook_outbox.delete_endpoint($1)", &[&ep.id]).expect("delete, left open").get(0);
    assert_eq!(dead, 0);

    let (done, result) = mpsc::channel();
    let mut app = cluster.client();
    let id = ep.id;
    let writer = std::thread::spawn(move || {
        let r = app.query_one("SELECT webhook_outbox.enqueue($1, 'test.event', $2)", &[&id, &json!({"n": 1})]);
        done.send(r.map(|row| row.get::<_, i64>(0))).expect("send");
    });
    assert!(result.recv_timeout(Duration::from_millis(500)).is_err(), "enqueue must wait for the delete's lock");
    operator.batch_execute("COMMIT").expect("commit");
    let outcome = result.recv_timeout(Duration::from_secs(10)).expect("enqueue returned");
    writer.join().expect("writer");
    let err = outcome.expect_err("the endpoint is gone once the delete committed");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42704"), "{err}");
    let rows: i64 = operator
        .query_one("SELECT count(*) FROM webhook_outbox.deliveries WHERE endpoint_id = $1", &[&ep.id])
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "nothing written for a deleted endpoint");
}
