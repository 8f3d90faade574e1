//! The per-backend flag cache. What keeps it fresh (a generation counter in
//! shared memory, this session's own changes) is `crate::config_cache`,
//! shared with emit()'s routes; without shared memory nothing is cached.

use crate::config_cache::{cached, load_latest, SessionCache};
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

/// The flag as committed now (see `config_cache::load_latest`).
fn load(key: &str) -> Option<Flag> {
    load_latest(&PLAN, LOAD_FLAG, "feature flag", key, |row| {
        row.map(|row| to_flag(&row))
            .transpose()
            .unwrap_or_else(|e| pgrx::error!("webhook_outbox: reading feature flag {key:?}: {e}"))
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
