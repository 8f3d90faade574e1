//! SQL-callable functions written in Rust. The rest of the API is SQL, in `sql/`.

mod attempts;
mod backfill;
mod endpoints;
pub mod metrics;
#[cfg(any(test, feature = "pg_test"))]
mod operations_tests;
mod run;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// An `ERROR` a DBA can act on: SQLSTATE, message naming the bad value, hint.
pub(crate) fn error(code: PgSqlErrorCode, message: impl Into<String>, hint: &str) -> ErrorReport {
    let report = ErrorReport::new(code, message.into(), "webhook_outbox");
    if hint.is_empty() {
        report
    } else {
        report.set_hint(hint)
    }
}

pub(crate) fn invalid(message: impl Into<String>, hint: &str) -> ErrorReport {
    error(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

/// Interval → milliseconds, counting a month as 30 days (as `justify_days` does).
pub(crate) fn interval_ms(i: &pgrx::datum::Interval) -> i64 {
    (i.as_micros() / 1_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// An event's id, type or subject as `enqueue`/`emit` take it: the rule of
/// `delivery::check_event_key`, with `invalid_parameter_value`.
/// Strict: a NULL subject (or a generated id) has nothing to check.
#[pgrx::pg_extern(immutable, strict, parallel_safe)]
fn _check_event_key(field: &str, value: &str) -> Result<(), ErrorReport> {
    crate::delivery::check_event_key(field, value).map_err(|e| invalid(e, ""))
}
