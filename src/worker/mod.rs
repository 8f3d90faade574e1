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

/// How long the worker waits at shutdown for requests already running; past
/// that their leases bring them back (`http_timeout` may be minutes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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
    unsafe { pg_sys::pgstat_report_appname(name.as_ptr()) };
    pin_session_settings();
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
    loop {
        wait(waker.fd(), sleep);
        waker.clear();
        // Whatever state the worker is in (paused, idle, waiting for the
        // extension), it absorbs interrupts and signal barriers here: a
        // DROP DATABASE elsewhere in the cluster waits for every backend.
        // A cancel between transactions has no statement to cancel: it
        // would only end the process.
        unsafe { pg_sys::QueryCancelPending = 0 };
        pgrx::check_for_interrupts!();
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
        if e.has_results() {
            report_activity(c"settling");
            match installed_transaction(|c| e.settle(c)) {
                Ok(Some(s)) => {
                    e.settled();
                    shmem::with_slot(index, |slot| {
                        slot.sent += s.sent;
                        slot.failed += s.failed;
                        slot.last_active_ms = now_ms();
                    })
                }
                // Dropped: nothing to settle into, and nothing more to send.
                Ok(None) => {
                    engine = None;
                    continue;
                }
                Err(err) => note_error(index, &mut last_error, &format!("settle: {err}")),
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
        if want == 0 || (want < batch / 2 && outstanding > 0) {
            continue;
        }
        report_activity(c"claiming");
        let claimed = installed_transaction(|c| {
            let claimed = e.claim(c, want)?;
            if claimed.count == want {
                return Ok((claimed.jobs, Some(Duration::ZERO))); // a full batch: there may be more
            }
            // A row can be due yet unclaimable (its endpoint has a full batch
            // out): the floor keeps that from becoming a busy loop.
            let due =
                engine::next_due_ms(c)?.map(|ms| Duration::from_millis(ms.max(MIN_NAP_MS) as u64));
            Ok((claimed.jobs, due))
        });
        match claimed {
            Ok(Some((jobs, due))) => {
                // Committed: only now may the requests leave.
                e.submit(jobs);
                sleep = sleep.min(due.unwrap_or(sleep));
            }
            Ok(None) => {
                // Dropped: what is queued has nowhere to be settled.
                engine = None;
                report_activity(c"waiting for CREATE EXTENSION webhook_outbox");
            }
            Err(err) => note_error(index, &mut last_error, &format!("claim: {err}")),
        }
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
        // Dropping the old listener closes its socket before the new bind, so
        // the same port can be taken again (e.g. 127.0.0.1:9187 -> 0.0.0.0:9187).
        if let Some(old) = scrape.take() {
            log!(
                "webhook_outbox: stopped serving GET /metrics on {}",
                old.address
            );
        }
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
        match installed_transaction(crate::api::metrics::render_metrics) {
            Ok(Some(Some(text))) => s.publish(text),
            Ok(Some(None)) => {
                s.publish("# metrics unavailable: webhook_outbox.metrics() returned NULL\n".into())
            }
            Ok(None) => s.publish(format!(
                "# webhook_outbox is not installed in database {}\n",
                guc::database()
            )),
            Err(e) => s.publish(format!("# metrics unavailable: {e}\n")),
        }
    }
}

/// SIGTERM: claim nothing more, give back what has not started, let running
/// requests finish (for `SHUTDOWN_GRACE` at most), settle everything.
fn shutdown(mut e: Engine, waker: &Waker) {
    e.release_queued();
    let deadline = Instant::now() + e.timeout().min(SHUTDOWN_GRACE);
    while !e.idle() && Instant::now() < deadline {
        wait(waker.fd(), Duration::from_millis(50));
        waker.clear();
    }
    match installed_transaction(|c| e.settle(c)) {
        Ok(_) => e.settled(),
        Err(err) => {
            warning!("webhook_outbox: settling at shutdown failed, leases will expire: {err}")
        }
    }
}

/// The installed extension's oid, if the schema the worker calls into is its
/// own: `webhook_outbox` is in pg_extension, its schema is that extension's
/// (pg_depend), owned by the extension's owner or a superuser and closed to
/// everyone else's CREATE (as CREATE EXTENSION requires, sql/schema.sql), and
/// the claim function is a member of it. A schema of that name that another role created, in a database
/// without the extension or after DROP EXTENSION, is never called.
const INSTALLED: &str = "
    SELECT (
        SELECT x.oid FROM pg_catalog.pg_extension x
        JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) x.extnamespace
        JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) n.nspowner
        WHERE x.extname OPERATOR(pg_catalog.=) 'webhook_outbox'::pg_catalog.name
          AND n.nspname OPERATOR(pg_catalog.=) 'webhook_outbox'::pg_catalog.name
          AND (n.nspowner OPERATOR(pg_catalog.=) x.extowner OR o.rolsuper)
          -- The schema is the extension's.
          AND EXISTS (
              SELECT FROM pg_catalog.pg_depend s
              WHERE s.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                AND s.objid OPERATOR(pg_catalog.=) x.oid
                AND s.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
                AND s.refobjid OPERATOR(pg_catalog.=) n.oid)
          -- The claim function is a member of it.
          AND EXISTS (
              SELECT FROM pg_catalog.pg_proc p
              JOIN pg_catalog.pg_depend m
                ON m.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
               AND m.objid OPERATOR(pg_catalog.=) p.oid
               AND m.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
               AND m.refobjid OPERATOR(pg_catalog.=) x.oid
               AND m.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog.\"char\"
              WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid
                AND p.proname OPERATOR(pg_catalog.=) '_claim'::pg_catalog.name)
          -- No one but superusers may create objects in the schema.
          AND NOT EXISTS (
              SELECT FROM pg_catalog.aclexplode(n.nspacl) a
              LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.grantee
              WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'::pg_catalog.text
                AND (a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid OR NOT r.rolsuper)))";

/// Whether the extension is installed (see `INSTALLED`), held so until the
/// transaction ends: the lock makes a concurrent DROP EXTENSION wait, so no
/// schema can be planted between the check and the statements after it.
fn installed(client: &mut pgrx::spi::SpiClient<'_>) -> pgrx::spi::Result<bool> {
    let extension = |c: &mut pgrx::spi::SpiClient<'_>| -> pgrx::spi::Result<Option<pg_sys::Oid>> {
        crate::plans::execute(c, INSTALLED, &[])?
            .first()
            .get_one::<pg_sys::Oid>()
    };
    let Some(oid) = extension(client)? else {
        return Ok(false);
    };
    // SAFETY: a lock on a catalog object, released at the end of the transaction.
    unsafe {
        pg_sys::LockDatabaseObject(
            pg_sys::ExtensionRelationId,
            oid,
            0,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        )
    };
    // Dropped while we waited for the lock?
    Ok(extension(client)? == Some(oid))
}

/// `spi_transaction`, run only if the extension is installed (`None` if not):
/// checked in every transaction, since the extension may be dropped, and a
/// schema of its name planted, at any time.
fn installed_transaction<R>(
    f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>) -> pgrx::spi::Result<R>,
) -> Result<Option<R>, String> {
    spi_transaction(|c| {
        if installed(c)? {
            f(c).map(Some)
        } else {
            Ok(None)
        }
    })
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
