//! Thin helpers over the extension's SQL API, so tests read as scenarios.

use std::time::Duration;

use postgres::GenericClient;
use serde_json::{json, Value};

use crate::wait_until;

/// Optional `create_endpoint` arguments; `None` keeps the SQL default.
#[derive(Default)]
pub struct EndpointOpts {
    pub rate_limit_rps: Option<f64>,
    pub max_attempts: Option<i32>,
    pub headers: Option<Value>,
}

pub struct Endpoint {
    pub id: i64,
    /// The generated `whsec_…` signing secret.
    pub secret: String,
}

pub fn create_endpoint(db: &mut impl GenericClient, url: &str, opts: &EndpointOpts) -> Endpoint {
    let headers = opts.headers.clone().unwrap_or_else(|| json!({}));
    let id: i64 = db
        .query_one(
            "SELECT webhook_outbox.create_endpoint(url => $1, rate_limit_rps => $2, max_attempts => $3, headers => $4)",
            &[&url, &opts.rate_limit_rps, &opts.max_attempts, &headers],
        )
        .unwrap_or_else(|e| panic!("create_endpoint({url}): {e}"))
        .get(0);
    let secret = db
        .query_one("SELECT secret FROM webhook_outbox.endpoints WHERE id = $1", &[&id])
        .expect("endpoint secret")
        .get(0);
    Endpoint { id, secret }
}

/// One delivery of `payload` (event type `test.event`), committed.
pub fn enqueue(db: &mut impl GenericClient, endpoint: i64, payload: &Value) -> i64 {
    db.query_one("SELECT webhook_outbox.enqueue($1, 'test.event', $2)", &[&endpoint, payload]).expect("enqueue").get(0)
}

/// `n` deliveries with payloads `{"seq": 1}` … `{"seq": n}`, committed together.
pub fn enqueue_seq(db: &mut impl GenericClient, endpoint: i64, n: i32) -> Vec<i64> {
    db.query(
        "SELECT webhook_outbox.enqueue($1, 'test.event', jsonb_build_object('seq', i)) FROM generate_series(1, $2) i",
        &[&endpoint, &n],
    )
    .expect("enqueue_seq")
    .iter()
    .map(|row| row.get(0))
    .collect()
}

#[derive(Debug)]
pub struct Delivery {
    pub status: String,
    pub attempt_count: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

pub fn delivery(db: &mut impl GenericClient, id: i64) -> Delivery {
    let row = db
        .query_one(
            "SELECT status, attempt_count, last_status_code, last_error FROM webhook_outbox.deliveries WHERE id = $1",
            &[&id],
        )
        .unwrap_or_else(|e| panic!("delivery {id}: {e}"));
    Delivery { status: row.get(0), attempt_count: row.get(1), last_status_code: row.get(2), last_error: row.get(3) }
}

/// Waits for delivery `id` to reach `status`; panics with its state and
/// attempts after `timeout`.
pub fn wait_for_status(db: &mut impl GenericClient, id: i64, status: &str, timeout: Duration) -> Delivery {
    if !wait_until(timeout, || delivery(db, id).status == status) {
        panic!(
            "delivery {id} not {status} after {timeout:?}: {:?}\nattempts: {:#?}",
            delivery(db, id),
            attempts(db, id)
        );
    }
    delivery(db, id)
}

/// Waits until the worker has moved every event emit() wrote into deliveries;
/// panics after `timeout`.
pub fn wait_for_intake(db: &mut impl GenericClient, timeout: Duration) {
    let left = |db: &mut _| -> i64 {
        GenericClient::query_one(db, "SELECT count(*) FROM webhook_outbox.intake", &[]).expect("intake").get(0)
    };
    if !wait_until(timeout, || left(db) == 0) {
        panic!("{} events still in the intake after {timeout:?}", left(db));
    }
}

/// Waits until every delivery of `endpoint` has `status`; panics with the
/// count per status after `timeout`.
pub fn wait_for_all(db: &mut impl GenericClient, endpoint: i64, status: &str, timeout: Duration) {
    if !wait_until(timeout, || statuses(db, endpoint).iter().all(|(s, _)| s == status)) {
        panic!("endpoint {endpoint}: not all {status} after {timeout:?}: {:?}", statuses(db, endpoint));
    }
}

/// (status, count) of an endpoint's deliveries, emit()'s events not yet
/// moved out of the intake included (as v_queue_status counts them).
pub fn statuses(db: &mut impl GenericClient, endpoint: i64) -> Vec<(String, i64)> {
    db.query(
        "SELECT status, sum(deliveries)::bigint FROM webhook_outbox._queue_counts WHERE endpoint_id = $1
         GROUP BY 1 ORDER BY 1",
        &[&endpoint],
    )
    .expect("statuses")
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

#[derive(Debug)]
pub struct Attempt {
    pub attempt_no: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
}

pub fn attempts(db: &mut impl GenericClient, delivery: i64) -> Vec<Attempt> {
    db.query(
        "SELECT attempt_no, status_code, error, duration_ms FROM webhook_outbox.attempts
         WHERE delivery_id = $1 ORDER BY attempted_at, attempt_no",
        &[&delivery],
    )
    .expect("attempts")
    .iter()
    .map(|row| Attempt { attempt_no: row.get(0), status_code: row.get(1), error: row.get(2), duration_ms: row.get(3) })
    .collect()
}

pub fn circuit_state(db: &mut impl GenericClient, endpoint: i64) -> String {
    db.query_one("SELECT circuit_state FROM webhook_outbox.health_metrics WHERE webhook_id = $1", &[&endpoint])
        .expect("health_metrics row")
        .get(0)
}

/// Case-insensitive: does the error text mention any of `words`?
pub fn mentions(error: &Option<String>, words: &[&str]) -> bool {
    let error = error.as_deref().unwrap_or_default().to_lowercase();
    words.iter().any(|w| error.contains(&w.to_lowercase()))
}
