//! What the workers report about themselves: `_worker_status()` over their
//! shared-memory slots, shown by `v_worker_status`.

use crate::guc;
use crate::shmem;
use pgrx::prelude::*;
use webhook_outbox_core::now_ms;

/// Log an error once per change, and keep it for v_worker_status.
pub(super) fn note_error(index: usize, last: &mut String, message: &str) {
    if last != message {
        warning!("webhook_outbox worker {index}: {message}");
        *last = message.to_owned();
    }
    shmem::with_slot(index, |slot| slot.set_error(message, now_ms()));
}

/// One row per worker slot, for `v_worker_status`. Times are Unix milliseconds.
// pgrx reads the result's column names from the signature itself.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn _worker_status() -> TableIterator<
    'static,
    (
        name!(worker, i32),
        name!(pid, Option<i32>),
        name!(started_ms, Option<i64>),
        name!(last_active_ms, Option<i64>),
        name!(sent, i64),
        name!(failed, i64),
        name!(last_error, Option<String>),
        name!(last_error_ms, Option<i64>),
    ),
> {
    let rows: Vec<_> = if shmem::available() {
        let workers = shmem::WORKERS.share();
        (0..guc::workers())
            .map(|i| {
                let s = &workers.slots[i];
                let nonzero = |v: i64| (v != 0).then_some(v);
                (
                    i as i32,
                    (s.pid != 0).then_some(s.pid),
                    nonzero(s.started_at_ms),
                    nonzero(s.last_active_ms),
                    s.sent as i64,
                    s.failed as i64,
                    s.last_error(),
                    nonzero(s.last_error_at_ms),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    TableIterator::new(rows)
}

/// Whether a background worker serves this database, and so moves emit()'s
/// events out of the intake (get_ready_deliveries() does it otherwise).
#[pg_extern(stable, parallel_safe)]
fn _worker_serves_here() -> bool {
    let serves = || {
        let workers = shmem::WORKERS.share();
        (0..guc::workers()).any(|i| workers.slots[i].pid != 0)
    };
    // SAFETY: MyDatabaseId is set in every backend that runs SQL; the name
    // is a palloc'd C string (NULL for a database dropped meanwhile).
    let here = unsafe {
        let name = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        (!name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        })
    };
    shmem::available() && here.as_deref() == Some(guc::database().as_str()) && serves()
}
