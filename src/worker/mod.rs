//! The background worker: registration, the process's entry point and its
//! session settings. The loop is in `main_loop`, its transactions in
//! `transaction`, the status it reports in `status`, waking it at commit in
//! `wake`. What one delivery pass does is `crate::pipeline`.

mod main_loop;
mod status;
mod transaction;
mod wake;

#[cfg(any(test, feature = "pg_test"))]
pub(crate) use main_loop::render_metrics;

use crate::guc;
use crate::shmem;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;
use webhook_outbox_core::now_ms;

pub fn register() {
    for i in 0..guc::workers() {
        BackgroundWorkerBuilder::new(&format!("webhook_outbox worker {i}"))
            .set_type("webhook_outbox worker")
            .set_library("webhook_outbox")
            .set_function("webhook_outbox_worker_main")
            .set_argument((i as i32).into_datum())
            .enable_spi_access()
            .set_restart_time(Some(Duration::from_secs(1)))
            .load();
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn webhook_outbox_worker_main(arg: pg_sys::Datum) {
    let index =
        unsafe { i32::from_polymorphic_datum(arg, false, pg_sys::INT4OID) }.unwrap_or(0) as usize;
    shmem::mark_worker();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = guc::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let name = std::ffi::CString::new(format!("webhook_outbox worker {index}")).unwrap_or_default();
    unsafe { pg_sys::pgstat_report_appname(name.as_ptr()) };
    pin_session_settings();
    shmem::with_slot(index, |slot| {
        *slot = shmem::WorkerSlot::default();
        slot.pid = unsafe { pg_sys::MyProcPid };
        slot.latch = unsafe { pg_sys::MyLatch } as u64;
        slot.started_at_ms = now_ms();
    });
    log!("webhook_outbox worker {index}: started, database={database}");
    main_loop::run(index);
    shmem::with_slot(index, |slot| *slot = shmem::WorkerSlot::default());
    log!("webhook_outbox worker {index}: stopped");
    // Exit code 1: the postmaster starts the worker again after its restart
    // time, unless the server is shutting down. A worker ended by
    // pg_terminate_backend (code 0 would mean "done for good") comes back.
    unsafe { pg_sys::proc_exit(1) };
}

/// Settings of the worker's session, set over any the database's owner could
/// otherwise choose for it (`ALTER DATABASE … SET`): what its statements
/// resolve to, run as, whether they may run at all, and how it commits.
fn pin_session_settings() {
    let settings: [(&std::ffi::CStr, &std::ffi::CStr); 8] = [
        // Losing the last commits in a crash only means sending those deliveries
        // again after their lease, which at-least-once allows: no fsync wait per batch.
        (c"synchronous_commit", c"off"),
        // A superuser's statements resolve names in pg_catalog only: a
        // function in `public` that matches an argument type more exactly
        // than pg_catalog's would win, and run as superuser.
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"role", c"none"),
        (c"default_transaction_read_only", c"off"),
        (c"default_transaction_isolation", c"read committed"),
        // A row lock held by another session (an external worker left idle
        // in a transaction) stalls one transaction, never the worker.
        (c"lock_timeout", c"5s"),
        // An ERROR the worker catches must stay an ERROR, not end the process.
        (c"exit_on_error", c"off"),
        (c"plpgsql.extra_errors", c"none"),
    ];
    for (name, value) in settings {
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
            )
        };
    }
}
