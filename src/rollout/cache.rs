//! The per-backend flag cache and what keeps it fresh.
//!
//! Entries are valid for one value of a generation counter in shared memory,
//! which every committed change of `feature_flags` bumps (a commit callback
//! registered by the table's trigger). A session therefore sees a change at
//! its next call, with no TTL; a session that changed a flag sees its own,
//! uncommitted change at once and forgets it again if it rolls back. Without
//! shared memory (library not preloaded) nothing is cached: every call reads
//! the table.

use crate::pg::error;
use crate::shmem::{self, GENERATION};
use pgrx::callbacks::{
    register_subxact_callback, register_xact_callback, PgSubXactCallbackEvent, PgXactCallbackEvent,
};
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;
use pgrx::PgSqlErrorCode;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use webhook_outbox_core::bucket::{decide, Decision, Flag};

/// A cache, not a copy of the table: lookups of many distinct (mostly
/// unknown) keys must not grow a backend without bound.
const MAX_ENTRIES: usize = 1024;

/// Fully qualified, operator included: it runs with the owner's rights under
/// the caller's search_path.
const LOAD_FLAG: &std::ffi::CStr = c"SELECT enabled, percentage, allowlist, denylist, salt \
    FROM webhook_outbox.feature_flags WHERE flag_key OPERATOR(pg_catalog.=) $1";

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    /// Moved on by this backend's own flag changes and their rollback.
    static LOCAL_EPOCH: Cell<u64> = const { Cell::new(0) };
    static CHANGED_IN_XACT: Cell<bool> = const { Cell::new(false) };
    /// `LOAD_FLAG`, prepared once per backend (kept plans are revalidated by
    /// Postgres when the table is recreated).
    static PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

#[derive(Default)]
struct Cache {
    /// (shared generation, local epoch) the entries belong to.
    valid_for: Option<(u64, u64)>,
    /// `None`: no such flag.
    flags: HashMap<String, Option<Flag>>,
}

/// What the entries must have been loaded under to be used now; `None`: no
/// shared memory, never use them.
fn current_validity() -> Option<(u64, u64)> {
    shmem::available().then(|| (GENERATION.get().load(Ordering::Acquire), LOCAL_EPOCH.get()))
}

/// Whether `subject` emits under the flag `flag_key`, from the cache when it
/// is current.
pub fn decision(flag_key: Option<&str>, subject: Option<&str>) -> Decision {
    let Some(key) = flag_key else {
        return decide(None, subject);
    };
    // Read before loading: a change committed after this point bumps the
    // generation again, so an entry is never kept longer than it is true.
    let validity = current_validity();
    let cached = CACHE.with_borrow_mut(|cache| {
        if validity.is_none() || cache.valid_for != validity {
            cache.flags.clear();
            cache.valid_for = validity;
        }
        cache
            .flags
            .get(key)
            .map(|flag| decide(flag.as_ref(), subject))
    });
    cached.unwrap_or_else(|| {
        // Outside the borrow: the query may raise an ERROR.
        let flag = load(key);
        let decision = decide(flag.as_ref(), subject);
        CACHE.with_borrow_mut(|cache| {
            if cache.flags.len() >= MAX_ENTRIES {
                cache.flags.clear();
            }
            cache.flags.insert(key.to_owned(), flag);
        });
        decision
    })
}

/// A statement changed `feature_flags`: this session must see it from its next
/// statement on, every other session once the transaction commits.
pub fn flags_changed() {
    invalidate_local();
    if CHANGED_IN_XACT.replace(true) {
        return;
    }
    // Commit and Abort callbacks must not raise an error: they only touch
    // atomics and Cells.
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        CHANGED_IN_XACT.set(false);
        if shmem::available() {
            GENERATION.get().fetch_add(1, Ordering::Release);
        }
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || {
        CHANGED_IN_XACT.set(false);
        invalidate_local();
    });
    // ROLLBACK TO SAVEPOINT (or an EXCEPTION block) undoes a change this
    // session may already have cached.
    register_subxact_callback(PgSubXactCallbackEvent::AbortSub, |_, _| invalidate_local());
    // COMMIT PREPARED runs no callback of ours, so no session would learn of
    // the change: refuse, as Postgres does for NOTIFY.
    register_xact_callback(PgXactCallbackEvent::PrePrepare, || {
        error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "cannot PREPARE a transaction that has changed webhook_outbox.feature_flags",
            "Change feature flags in a transaction of their own.",
        )
        .report(PgLogLevel::ERROR)
    });
}

fn invalidate_local() {
    LOCAL_EPOCH.set(LOCAL_EPOCH.get().wrapping_add(1));
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
