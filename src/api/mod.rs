//! SQL-callable functions written in Rust. The rest of the API is SQL, in `sql/`.

mod attempts;
mod backfill;
mod endpoints;
mod run;

use crate::pg::invalid;
use pgrx::pg_sys::panic::ErrorReport;

/// An event's id, type or subject as `enqueue`/`emit` take it: the rule of
/// `delivery::check_event_key`, with `invalid_parameter_value`.
/// Strict: a NULL subject (or a generated id) has nothing to check.
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn _check_event_key(field: &str, value: &str) -> Result<(), ErrorReport> {
    webhook_outbox_core::delivery::check_event_key(field, value).map_err(|e| invalid(e, ""))
}
