//! What keeps the per-backend caches of configuration fresh: the feature
//! flags (`rollout::cache`) and where emit() sends each event type
//! (`api::routes`), both read on hot paths, both rarely changed.
//!
//! Entries are valid for one value of a generation counter in shared memory,
//! which every committed change of `feature_flags` or `endpoints` bumps (a
//! commit callback registered by the tables' triggers). A session therefore
//! sees a change at its next call, with no TTL; a session that changed a flag
//! or an endpoint sees its own, uncommitted change at once and forgets it
//! again if it rolls back. Without shared memory (library not preloaded)
//! nothing is cached: every call reads the table.

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
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::thread::LocalKey;

/// A cache, not a copy of the table: lookups of many distinct (mostly
/// unknown) keys must not grow a backend without bound.
const MAX_ENTRIES: usize = 1024;

/// (shared generation, local epoch): what cached entries were loaded under.
type Validity = (u64, u64);

/// One session cache: entries by key, all loaded under one validity.
pub(crate) struct SessionCache<V> {
    valid_for: Option<Validity>,
    entries: HashMap<String, V>,
}

impl<V> Default for SessionCache<V> {
    fn default() -> Self {
        SessionCache {
            valid_for: None,
            entries: HashMap::new(),
        }
    }
}

/// `read` of the entry for `key` in `cache`, loaded by `load` when missing or
/// no longer valid. `load` runs outside the borrow: it may raise an ERROR.
pub(crate) fn cached<V, R>(
    cache: &'static LocalKey<RefCell<SessionCache<V>>>,
    key: &str,
    load: impl FnOnce() -> V,
    read: impl Fn(&V) -> R,
) -> R {
    let validity = current_validity();
    let hit = cache.with_borrow_mut(|c| {
        if validity.is_none() || c.valid_for != validity {
            c.entries.clear();
            c.valid_for = validity;
        }
        c.entries.get(key).map(&read)
    });
    if let Some(hit) = hit {
        return hit;
    }
    let value = load();
    let result = read(&value);
    cache.with_borrow_mut(|c| {
        if c.entries.len() >= MAX_ENTRIES {
            c.entries.clear();
        }
        c.entries.insert(key.to_owned(), value);
    });
    result
}

thread_local! {
    /// Moved on by this backend's own changes and their rollback.
    static LOCAL_EPOCH: Cell<u64> = const { Cell::new(0) };
    static CHANGED_IN_XACT: Cell<bool> = const { Cell::new(false) };
}

/// What entries must have been loaded under to be used now; `None`: no
/// shared memory, never use them. Read before loading: a change committed
/// after that bumps the generation again, so an entry is never kept longer
/// than it is true.
fn current_validity() -> Option<Validity> {
    shmem::available().then(|| (GENERATION.get().load(Ordering::Acquire), LOCAL_EPOCH.get()))
}

/// A statement changed `feature_flags` or `endpoints`: this session must see
/// it from its next statement on, every other session once the transaction
/// commits.
pub(crate) fn changed() {
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
            "cannot PREPARE a transaction that has changed webhook_outbox.feature_flags or endpoints",
            "Change feature flags and endpoints in a transaction of their own.",
        )
        .report(PgLogLevel::ERROR)
    });
}

fn invalidate_local() {
    LOCAL_EPOCH.set(LOCAL_EPOCH.get().wrapping_add(1));
}

/// Reads the entry for `key` with `sql` (one text parameter, prepared once
/// per session in `plan`): what is committed now plus this transaction's own
/// changes, whatever the calling statement's snapshot, since the entry
/// outlives the statement. `read` gets the first row, if any, inside the SPI
/// connection; `what` names the entry in errors.
pub(crate) fn load_latest<R>(
    plan: &'static LocalKey<Cell<pg_sys::SPIPlanPtr>>,
    sql: &CStr,
    what: &str,
    key: &str,
    read: impl FnOnce(Option<SpiHeapTupleData>) -> R,
) -> R {
    Spi::connect(|_| {
        // SAFETY: SPI is connected; the plan is kept for the backend's life;
        // `read` copies what it needs before SPI_finish frees the tuple table.
        unsafe {
            let mut args = [key.into_datum().expect("a &str is never NULL")];
            let status = pg_sys::SPI_execute_snapshot(
                crate::pg::kept_plan(plan, sql, &[pg_sys::TEXTOID], what)
                    .unwrap_or_else(|e| pgrx::error!("webhook_outbox: {}", e.message())),
                args.as_mut_ptr(),
                std::ptr::null(),
                pg_sys::GetLatestSnapshot(),
                std::ptr::null_mut(),
                true,
                false,
                1,
            );
            if status != pg_sys::SPI_OK_SELECT as i32 {
                pgrx::error!("webhook_outbox: reading {what} {key:?} failed: SPI status {status}");
            }
            let row = match pg_sys::SPI_processed {
                0 => None,
                _ => {
                    let table = &*pg_sys::SPI_tuptable;
                    SpiHeapTupleData::new(table.tupdesc, *table.vals).unwrap_or_else(|e| {
                        pgrx::error!("webhook_outbox: reading {what} {key:?}: {e}")
                    })
                }
            };
            read(row)
        }
    })
}
