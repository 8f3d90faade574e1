//! The per-backend flag cache. What keeps it fresh (a generation counter in
//! shared memory, this session's own changes) is `crate::config_cache`,
//! shared with emit()'s routes; without shared memory nothing is cached.

use crate::config_cache::{cached, SessionCache};
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;
use std::cell::{Cell, RefCell};
use webhook_outbox_core::bucket::{decide, Decision, Flag};

/// Fully qualified, operator included: it runs with the owner's rights under
/// the caller's search_path.
const LOAD_FLAG: &std::ffi::CStr = c"SELECT enabled, percentage, allowlist, denylist, salt \
    FROM webhook_outbox.feature_flags WHERE flag_key OPERATOR(pg_catalog.=) $1";

thread_local! {
    /// Flags by key; `None`: no such flag.
    static CACHE: RefCell<SessionCache<Option<Flag>>> = RefCell::new(SessionCache::default());
    /// `LOAD_FLAG`, prepared once per backend (kept plans are revalidated by
    /// Postgres when the table is recreated).
    static PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

/// Whether `subject` emits under the flag `flag_key`, from the cache when it
/// is current.
pub fn decision(flag_key: Option<&str>, subject: Option<&str>) -> Decision {
    let Some(key) = flag_key else {
        return decide(None, subject);
    };
    cached(
        &CACHE,
        key,
        || load(key),
        |flag| decide(flag.as_ref(), subject),
    )
}

/// The flag as committed now, plus this transaction's own changes, whatever
/// the calling statement's snapshot: the entry outlives the statement.
fn load(key: &str) -> Option<Flag> {
    Spi::connect(|_| {
        // SAFETY: SPI is connected; the plan is kept for the backend's life;
        // the tuple table is read before SPI_finish frees it, and every value
        // taken from it is copied into Rust types.
        unsafe {
            let mut args = [key.into_datum().expect("a &str is never NULL")];
            let status = pg_sys::SPI_execute_snapshot(
                load_plan(),
                args.as_mut_ptr(),
                std::ptr::null(),
                pg_sys::GetLatestSnapshot(),
                std::ptr::null_mut(),
                true,
                false,
                1,
            );
            if status != pg_sys::SPI_OK_SELECT as i32 {
                pgrx::error!(
                    "webhook_outbox: reading feature flag {key:?} failed: SPI status {status}"
                );
            }
            if pg_sys::SPI_processed == 0 {
                return None;
            }
            let table = &*pg_sys::SPI_tuptable;
            SpiHeapTupleData::new(table.tupdesc, *table.vals)
                .and_then(|row| row.map(|row| to_flag(&row)).transpose())
                .unwrap_or_else(|e| {
                    pgrx::error!("webhook_outbox: reading feature flag {key:?}: {e}")
                })
        }
    })
}

fn to_flag(row: &SpiHeapTupleData) -> Result<Flag, pgrx::spi::SpiError> {
    // The table's NOT NULL and CHECK constraints make the defaults unreachable.
    Ok(Flag {
        enabled: row.get::<bool>(1)?.unwrap_or(false),
        percentage: row.get::<i32>(2)?.unwrap_or(0).clamp(0, 100) as u8,
        allowlist: row
            .get::<Vec<String>>(3)?
            .unwrap_or_default()
            .into_iter()
            .collect(),
        denylist: row
            .get::<Vec<String>>(4)?
            .unwrap_or_default()
            .into_iter()
            .collect(),
        salt: row.get::<String>(5)?,
    })
}

fn load_plan() -> pg_sys::SPIPlanPtr {
    if PLAN.get().is_null() {
        let mut arg_types = [pg_sys::TEXTOID];
        // SAFETY: called inside an SPI connection, with one argument type for
        // the one parameter.
        let plan = unsafe { pg_sys::SPI_prepare(LOAD_FLAG.as_ptr(), 1, arg_types.as_mut_ptr()) };
        if plan.is_null() {
            pgrx::error!(
                "webhook_outbox: preparing the feature flag query failed: SPI status {}",
                unsafe { pg_sys::SPI_result }
            );
        }
        // SAFETY: a valid plan; keeping moves it out of SPI's memory context.
        unsafe { pg_sys::SPI_keepplan(plan) };
        PLAN.set(plan);
    }
    PLAN.get()
}
