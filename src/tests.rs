//! `#[pg_test]`s: SQL functions inside one (rolled-back) transaction each.
//! Anything involving the worker, commits or several sessions is in pgrx-tests/.

use pgrx::prelude::*;

#[pg_test]
fn create_endpoint_returns_an_id() {
    let id = Spi::get_one::<i64>("SELECT webhook_outbox.create_endpoint('https://example.com/hook')").unwrap();
    assert!(id.is_some());
}
