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
use pgrx::PgSqlErrorCode;
use std::cell::Cell;
use std::sync::atomic::Ordering;

/// A cache, not a copy of the table: lookups of many distinct (mostly
/// unknown) keys must not grow a backend without bound.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// (shared generation, local epoch): what cached entries were loaded under.
pub(crate) type Validity = (u64, u64);

thread_local! {
    /// Moved on by this backend's own changes and their rollback.
    static LOCAL_EPOCH: Cell<u64> = const { Cell::new(0) };
    static CHANGED_IN_XACT: Cell<bool> = const { Cell::new(false) };
}

/// What entries must have been loaded under to be used now; `None`: no
/// shared memory, never use them. Read it before loading: a change committed
/// after that bumps the generation again, so an entry is never kept longer
/// than it is true.
pub(crate) fn current_validity() -> Option<Validity> {
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
