//! Waking the workers when a transaction that queued deliveries commits.

use crate::shmem;
use pgrx::callbacks::{register_xact_callback, PgXactCallbackEvent};
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    pub(super) static IS_WORKER: Cell<bool> = const { Cell::new(false) };
    static WAKE_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Set the workers' latches when the current transaction commits (once per
/// transaction, however many rows it wrote). The worker itself needs no wake-up.
pub fn wake_at_commit() {
    if IS_WORKER.get() || WAKE_REGISTERED.get() || !shmem::available() {
        return;
    }
    WAKE_REGISTERED.set(true);
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        WAKE_REGISTERED.set(false);
        shmem::wake_all();
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || WAKE_REGISTERED.set(false));
}

/// The statement trigger on `deliveries` (sql/enqueue.sql): a C function, as
/// it fires for every statement that queues deliveries (each `emit`).
#[pg_trigger]
fn _wake_trigger<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    wake_at_commit();
    Ok(None)
}
