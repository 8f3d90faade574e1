//! Postgres helpers shared by the SQL-callable functions, the worker and the
//! settle step: errors a DBA can act on, interval conversion, and the
//! statements run on every batch, prepared once per session and kept (the
//! worker would otherwise parse and plan them again for each transaction).

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::PgOid;
use pgrx::spi::{self, OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::PgSqlErrorCode;
use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::CStr;
use std::thread::LocalKey;

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

pub(crate) fn not_null(name: &str, hint: &str) -> ErrorReport {
    error(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{name} must not be NULL"),
        hint,
    )
}

pub(crate) fn spi_error(e: pgrx::spi::Error) -> ErrorReport {
    error(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("SPI: {e}"),
        "",
    )
}

/// Interval → milliseconds, counting a month as 30 days (as `justify_days` does).
pub(crate) fn interval_ms(i: &pgrx::datum::Interval) -> i64 {
    (i.as_micros() / 1_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

thread_local! {
    /// Keyed by the address of the `&'static str`: one entry per call site's query.
    static PLANS: RefCell<HashMap<usize, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Run `sql` (a constant) with `args`, preparing it on first use with the
/// argument types of that first call.
pub fn execute<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
) -> spi::Result<SpiTupleTable<'conn>> {
    let key = sql.as_ptr() as usize;
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        let statement = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                e.insert(client.prepare_mut(sql, &types)?.keep())
            }
        };
        client.update(&*statement, None, args)
    })
}

/// The plan of `sql`, prepared on first use and kept in `cell` for the
/// session, for statements run on raw datums (`SPI_execute_plan`,
/// `SPI_execute_snapshot`) on every call of a hot function; [`execute`]
/// serves the rest. A generic plan: with one made for each call's values,
/// PostgreSQL would plan again at every call (such a plan, for one row,
/// looks cheaper than the generic one), and planning costs more than these
/// statements. `what` names the statement in the error.
///
/// # Safety
/// SPI is connected, `types` has one type per parameter of `sql`, and `cell`
/// keeps the plan of this `sql` only.
pub(crate) unsafe fn kept_plan(
    cell: &'static LocalKey<Cell<pg_sys::SPIPlanPtr>>,
    sql: &CStr,
    types: &[pg_sys::Oid],
    what: &str,
) -> Result<pg_sys::SPIPlanPtr, ErrorReport> {
    let kept = cell.get();
    if !kept.is_null() {
        return Ok(kept);
    }
    let mut types = types.to_vec();
    // SAFETY: a NUL-terminated statement and one type per parameter.
    let plan = unsafe {
        pg_sys::SPI_prepare_cursor(
            sql.as_ptr(),
            types.len() as i32,
            types.as_mut_ptr(),
            pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
        )
    };
    // SAFETY: keeping a valid plan moves it out of SPI's memory context.
    if plan.is_null() || unsafe { pg_sys::SPI_keepplan(plan) } != 0 {
        return Err(error(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("cannot prepare {what}: SPI status {}", unsafe {
                pg_sys::SPI_result
            }),
            "",
        ));
    }
    cell.set(plan);
    Ok(plan)
}
