//! `#[pg_test]`s: the SQL API, one rolled-back transaction per test.
//! Anything involving the worker, commits or several sessions is in pgrx-tests/.
//!
//! `cargo pgrx test` calls each test as `tests.<name>()`. `#[pg_schema]` only
//! takes an inline module and only covers that module's own functions, so the
//! schema is declared below and every test says `#[pg_test(schema = "tests")]`
//! (without it, it would land in `webhook_outbox` and show up as public API).
//! Test names must be unique across submodules: they share that schema.
//!
//! `now()` is constant inside a test: a row is made due or expired by moving
//! its timestamps into the past. Helpers interpolate only integers into SQL.

mod attempts;
mod backfill;
mod catalog;
mod claim;
mod endpoints;
mod health;
mod lifecycle;
mod maintenance;
mod metrics;
mod operations;
mod outbox;
mod replay;
mod rollout;
mod signing;
mod views;

use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};

/// Declares the `tests` schema the test functions live in.
#[allow(clippy::module_inception)]
#[pg_schema]
mod tests {}

/// The value of a one-row, one-column query; panics on an error or NULL.
#[track_caller]
fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
    maybe(sql).unwrap_or_else(|| panic!("NULL from {sql}"))
}

/// The value of a one-row, one-column query, NULL as `None`.
#[track_caller]
fn maybe<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The first column of every row, in the query's order; NULL panics.
#[track_caller]
fn column<T: FromDatum + IntoDatum>(sql: &str) -> Vec<T> {
    Spi::connect_mut(|client| {
        let rows = client
            .update(sql, None, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.map(|row| {
            row.get::<T>(1)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .expect("NULL value")
        })
        .collect()
    })
}

#[track_caller]
fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Moves emit()'s events from the intake into deliveries, as the worker
/// would; returns how many it moved.
#[track_caller]
fn route() -> i32 {
    one::<i32>("SELECT webhook_outbox._route_intake(10000)")
}

/// `(SQLSTATE, message)` of the error `sql` raises, caught in a PL/pgSQL
/// exception block (a subtransaction), so the test goes on afterwards.
/// Panics if `sql` succeeds.
#[track_caller]
fn error_of(sql: &str) -> (String, String) {
    if maybe::<bool>("SELECT to_regprocedure('pg_temp.error_of(text)') IS NULL") == Some(true) {
        run(
            "CREATE FUNCTION pg_temp.error_of(sql text, OUT state text, OUT msg text)
             LANGUAGE plpgsql AS $$
             BEGIN
                 EXECUTE sql;
             EXCEPTION WHEN OTHERS THEN
                 GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
             END $$",
        );
    }
    match Spi::get_two_with_args::<String, String>(
        "SELECT state, msg FROM pg_temp.error_of($1)",
        &[sql.into()],
    ) {
        Ok((Some(state), Some(msg))) => (state, msg),
        Ok(_) => panic!("expected an error from: {sql}"),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Asserts that `sql` fails with SQLSTATE `state` and a message containing `message`.
#[track_caller]
fn assert_fails(sql: &str, state: &str, message: &str) {
    let (got_state, got_message) = error_of(sql);
    assert!(
        got_state == state && got_message.contains(message),
        "{sql}\n  expected {state} {message:?}\n  got      {got_state} {got_message:?}"
    );
}

/// A new https endpoint; `args` are extra named arguments of create_endpoint,
/// e.g. `"name => 'a', max_attempts => 3"`.
fn endpoint(args: &str) -> i64 {
    let sep = if args.is_empty() { "" } else { ", " };
    one(&format!(
        "SELECT webhook_outbox.create_endpoint('https://example.com/hook'{sep}{args})"
    ))
}

/// One `order.paid` delivery to `endpoint`, with a generated event_id.
fn enqueue(endpoint: i64) -> i64 {
    one(&format!(
        "SELECT webhook_outbox.enqueue({endpoint}, 'order.paid', '{{\"n\": 1}}')"
    ))
}

/// Ids handed out by `get_ready_deliveries(batch_size)`, sorted.
fn claim(batch_size: i32) -> Vec<i64> {
    column(&format!(
        "SELECT id FROM webhook_outbox.get_ready_deliveries({batch_size}) ORDER BY id"
    ))
}

/// One column (or expression) of a delivery.
#[track_caller]
fn delivery<T: FromDatum + IntoDatum>(id: i64, expr: &str) -> T {
    one(&format!(
        "SELECT {expr} FROM webhook_outbox.deliveries WHERE id = {id}"
    ))
}

/// One column (or expression) of an endpoint's health_metrics row.
#[track_caller]
fn health<T: FromDatum + IntoDatum>(endpoint: i64, expr: &str) -> T {
    one(&format!(
        "SELECT {expr} FROM webhook_outbox.health_metrics WHERE webhook_id = {endpoint}"
    ))
}

/// `UPDATE webhook_outbox.<table> SET <set>` for one row, by id (health_metrics: by endpoint).
fn update(table: &str, id: i64, set: &str) {
    let key = if table == "health_metrics" {
        "webhook_id"
    } else {
        "id"
    };
    run(&format!(
        "UPDATE webhook_outbox.{table} SET {set} WHERE {key} = {id}"
    ));
}

/// Makes a pending/retry delivery due now.
fn make_due(id: i64) {
    update(
        "deliveries",
        id,
        "next_attempt_at = now() - interval '1 second'",
    );
}

/// The delivery's current lease token, as SQL (for record_attempt).
fn lease(id: i64) -> String {
    format!("(SELECT lease_token FROM webhook_outbox.deliveries WHERE id = {id})")
}

/// Makes delivery `id` due, claims it (it must be the only due one) and
/// reports `result` (e.g. `"500, 20"`); returns record_attempt's new status.
#[track_caller]
fn attempt(id: i64, result: &str) -> String {
    make_due(id);
    assert_eq!(claim(100), vec![id], "claiming delivery {id}");
    one(&format!(
        "SELECT webhook_outbox.record_attempt({id}, {}, {result})",
        lease(id)
    ))
}

/// Seconds from now() to the delivery's next attempt.
fn delay_s(id: i64) -> f64 {
    delivery(id, "extract(epoch FROM next_attempt_at - now())::float8")
}
