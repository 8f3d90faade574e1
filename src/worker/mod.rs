//! The background worker: registration, the loop, and waking it at commit.

pub mod engine;
pub mod pool;
pub mod ratelimit;
mod scrape;
pub mod shmem;

use crate::guc::{self, Mode};
use crate::settle::now_ms;
use engine::Engine;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::callbacks::{register_xact_callback, PgXactCallbackEvent};
use pgrx::prelude::*;
use pool::Waker;
use scrape::Scrape;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Shortest sleep when something is due but nothing could be claimed.
const MIN_NAP_MS: i64 = 10;

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

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
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

#[pg_extern(volatile, parallel_unsafe)]
fn _wake_at_commit() {
    wake_at_commit()
}

/// Run `f` in its own transaction. Unlike `BackgroundWorker::transaction`, an
/// ERROR inside is caught and the transaction aborted: one bad batch is
/// logged, the worker goes on.
fn transaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    // Whatever `f` touched is discarded or logged on error, never reused half-done.
    let f = std::panic::AssertUnwindSafe(f);
    let outcome = PgTryBuilder::new(move || Ok(f()))
        .catch_others(|e| {
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_owned(),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                    ereport.message().to_owned()
                }
            })
        })
        .execute();
    unsafe {
        match outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
        // Without this autovacuum never learns about the worker's dead rows.
        pg_sys::pgstat_report_stat(false);
    }
    outcome
}

/// `transaction` around SPI work, with both kinds of failure as one message.
fn spi_transaction<R>(
    f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>) -> pgrx::spi::Result<R>,
) -> Result<R, String> {
    transaction(|| Spi::connect_mut(f))?.map_err(|e| e.to_string())
}

fn report_activity(text: &std::ffi::CStr) {
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr()) };
}

/// Wait for the latch, finished HTTP jobs, or the timeout.
fn wait(fd: std::os::fd::RawFd, timeout: Duration) {
    let mut events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    if fd >= 0 {
        events |= pg_sys::WL_SOCKET_READABLE;
    }
    unsafe {
        pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            events as i32,
            fd as pg_sys::pgsocket,
            timeout.as_millis().min(i32::MAX as u128) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn webhook_outbox_worker_main(arg: pg_sys::Datum) {
    let index =
        unsafe { i32::from_polymorphic_datum(arg, false, pg_sys::INT4OID) }.unwrap_or(0) as usize;
    IS_WORKER.set(true);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = guc::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let name = std::ffi::CString::new(format!("webhook_outbox worker {index}")).unwrap_or_default();
    unsafe {
        pg_sys::pgstat_report_appname(name.as_ptr());
        // Losing the last commits in a crash only means sending those deliveries
        // again after their lease, which at-least-once allows: no fsync wait per batch.
        pg_sys::SetConfigOption(
            c"synchronous_commit".as_ptr(),
            c"off".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
    shmem::with_slot(index, |slot| {
        *slot = shmem::WorkerSlot::default();
        slot.pid = unsafe { pg_sys::MyProcPid };
        slot.latch = unsafe { pg_sys::MyLatch } as u64;
        slot.started_at_ms = now_ms();
    });
    log!("webhook_outbox worker {index}: started, database={database}");
    run(index);
    shmem::with_slot(index, |slot| *slot = shmem::WorkerSlot::default());
    log!("webhook_outbox worker {index}: stopped");
}

fn run(index: usize) {
    let waker = match Waker::new() {
        Ok(w) => w,
        Err(e) => {
            warning!("webhook_outbox worker {index}: cannot create eventfd: {e}");
            return;
        }
    };
    let mut engine: Option<Engine> = None;
    let mut scrape: Option<Scrape> = None;
    let mut sleep = Duration::ZERO;
    let mut last_error = String::new();
    // Checked again after any failed transaction (the extension may have been dropped).
    let mut ready = false;
    loop {
        wait(waker.fd(), sleep);
        waker.clear();
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            if let Some(Err(err)) = engine.as_mut().map(Engine::reload) {
                note_error(index, &mut last_error, &format!("reload: {err}"));
            }
        }
        if index == 0 {
            serve_metrics(&mut scrape, &waker, &mut last_error);
        }
        sleep = Duration::from_millis(guc::poll_interval_ms());
        let e = match engine.as_mut() {
            Some(e) => e,
            None => match Engine::new(waker.clone()) {
                Ok(e) => engine.insert(e),
                Err(err) => {
                    note_error(index, &mut last_error, &err);
                    continue;
                }
            },
        };
        if !ready {
            match transaction(extension_ready) {
                Ok(true) => ready = true,
                // The extension is not there (yet, or any more): wait, don't crash-loop.
                Ok(false) => continue,
                Err(err) => {
                    note_error(index, &mut last_error, &err);
                    continue;
                }
            }
        }
        if e.has_results() {
            report_activity(c"settling");
            match spi_transaction(|c| e.settle(c)) {
                Ok(s) => shmem::with_slot(index, |slot| {
                    slot.sent += s.sent;
                    slot.failed += s.failed;
                    slot.last_active_ms = now_ms();
                }),
                Err(err) => {
                    ready = false;
                    note_error(index, &mut last_error, &format!("settle: {err}"));
                }
            }
        }
        if guc::mode() != Mode::On {
            // Jobs not yet started go back at once; the next pass settles them.
            e.release_queued();
            report_activity(c"paused (webhook_outbox.mode is not on)");
            continue;
        }
        // Up to two batches in flight: one being sent while the next is claimed.
        // Claim whole batches (or anything when idle): per-row transactions are what is slow.
        let batch = guc::batch_size();
        let outstanding = e.outstanding();
        if outstanding > 0 {
            // Results are settled at least this often even when few come back.
            sleep = sleep.min(Duration::from_millis(20));
        }
        let want = (2 * batch).saturating_sub(outstanding).min(batch);
        if want < batch / 2 && outstanding > 0 {
            continue;
        }
        report_activity(c"claiming");
        let claimed = spi_transaction(|c| {
            if e.claim(c, want)? == want {
                return Ok(Some(Duration::ZERO)); // a full batch: there may be more
            }
            // A row can be due yet unclaimable (its endpoint has a full batch
            // out): the floor keeps that from becoming a busy loop.
            Ok(engine::next_due_ms(c)?.map(|ms| Duration::from_millis(ms.max(MIN_NAP_MS) as u64)))
        });
        match claimed {
            Ok(due) => sleep = sleep.min(due.unwrap_or(sleep)),
            Err(err) => {
                ready = false;
                note_error(index, &mut last_error, &format!("claim: {err}"));
            }
        }
        report_activity(c"waiting");
    }
    if let Some(e) = engine {
        shutdown(e, &waker);
    }
}

/// Start, move or stop the /metrics listener as `metrics_listen` says, and
/// answer a waiting scrape.
fn serve_metrics(scrape: &mut Option<Scrape>, waker: &Waker, last_error: &mut String) {
    let address = guc::metrics_listen();
    if scrape.as_ref().map(|s| s.address.as_str()) != Some(address.as_str()) {
        // A listener thread cannot be stopped; a changed address starts a new
        // one, and the old one keeps serving its last text until restart.
        *scrape = None;
        if !address.is_empty() {
            let wake = waker.clone();
            match Scrape::start(&address, move || wake.wake()) {
                Ok(s) => {
                    log!("webhook_outbox: serving GET /metrics on {address}");
                    *scrape = Some(s);
                }
                Err(e) => note_error(0, last_error, &format!("metrics_listen {address}: {e}")),
            }
        }
    }
    if let Some(s) = scrape.as_ref().filter(|s| s.wanted()) {
        match transaction(crate::api::metrics::render_metrics) {
            Ok(Ok(text)) => s.publish(text),
            Ok(Err(e)) | Err(e) => s.publish(format!("# metrics unavailable: {e}\n")),
        }
    }
}

/// SIGTERM: claim nothing more, give back what has not started, let running
/// requests finish (at most one HTTP timeout), settle everything.
fn shutdown(mut e: Engine, waker: &Waker) {
    e.release_queued();
    let deadline = Instant::now() + e.timeout();
    while !e.idle() && Instant::now() < deadline {
        wait(waker.fd(), Duration::from_millis(50));
        waker.clear();
    }
    if let Err(err) = spi_transaction(|c| e.settle(c)) {
        warning!("webhook_outbox: settling at shutdown failed, leases will expire: {err}");
    }
}

/// The extension's tables exist in this database (CREATE EXTENSION may come later, or be dropped).
fn extension_ready() -> bool {
    Spi::get_one::<bool>("SELECT to_regclass('webhook_outbox.deliveries') IS NOT NULL")
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Log an error once per change, and keep it for v_worker_status.
fn note_error(index: usize, last: &mut String, message: &str) {
    if last != message {
        warning!("webhook_outbox worker {index}: {message}");
        *last = message.to_owned();
    }
    shmem::with_slot(index, |slot| slot.set_error(message, now_ms()));
}

/// One row per worker slot, for `v_worker_status`. Times are Unix milliseconds.
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

extension_sql!(
    r#"
CREATE VIEW v_worker_status AS
SELECT w.worker,
       w.pid,
       w.pid IS NOT NULL AS running,
       to_timestamp(w.started_ms / 1000.0)     AS started_at,
       to_timestamp(w.last_active_ms / 1000.0) AS last_active_at,
       w.sent,
       w.failed,
       w.last_error,
       to_timestamp(w.last_error_ms / 1000.0)  AS last_error_at,
       a.state,
       a.query AS activity
FROM _worker_status() w
LEFT JOIN pg_stat_activity a ON a.pid = w.pid;
COMMENT ON VIEW v_worker_status IS 'Delivery workers: pid, running, deliveries settled since start, last error, current activity.';
"#,
    name = "worker_status_view",
    requires = [_worker_status],
);
