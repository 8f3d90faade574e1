//! The worker's loop: wait, settle what came back, claim more, hand it to the
//! HTTP thread; serve `/metrics` (worker 0); settle what it can at shutdown.

use super::status::note_error;
use super::transaction::installed_transaction;
use crate::guc::{self, Mode};
use crate::pipeline::{self, Engine};
use crate::shmem;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::{Duration, Instant};
use webhook_outbox_core::dispatch::Waker;
use webhook_outbox_core::now_ms;
use webhook_outbox_core::scrape::Scrape;

/// How long the worker waits at shutdown for requests already running; past
/// that their leases bring them back (`http_timeout` may be minutes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Shortest sleep when something is due but nothing could be claimed.
const MIN_NAP_MS: i64 = 10;

/// Under load every commit wakes the worker, and a claim's transaction costs
/// nearly as much for one row as for a batch: a claim (or move out of the
/// intake) that found something is followed by the next one this much later
/// at the earliest, which takes what arrived meanwhile. One that found
/// nothing holds nothing back, so that at low load each event leaves at
/// once; nor does a full one (more is waiting). Results are settled whenever
/// they come.
const TAKE_EVERY: Duration = Duration::from_millis(5);

/// How long until the next claim may start (`None`: now); see [`TAKE_EVERY`].
fn too_soon(last_take: Instant, more: bool) -> Option<Duration> {
    if more {
        return None;
    }
    TAKE_EVERY
        .checked_sub(last_take.elapsed())
        .filter(|rest| !rest.is_zero())
}

/// Moving emit()'s events out of the intake, in transactions of their own
/// (never inside a claim: an event may wait on another session, see
/// `_route_intake`): when a transaction that wrote the intake has committed
/// since the last move, after a full move, and once a poll interval (for an
/// event that waited on another session, or any left from before a restart).
///
/// The intake is first in, first out across endpoints; the claim's fair
/// shares per endpoint apply only once events are deliveries. So a pass moves
/// up to [`MOVE_BATCHES`] claims' worth: when the application emits faster
/// than the worker delivers, the backlog collects in deliveries, where a quiet
/// endpoint's event does not wait behind a busy one's.
struct Intake {
    seen: Option<u64>,
    last: Instant,
    more: bool,
}

impl Intake {
    fn new() -> Intake {
        Intake {
            seen: None,
            last: Instant::now(),
            more: false,
        }
    }

    /// Events moved (none when nothing new was committed).
    fn route(&mut self) -> Result<usize, String> {
        let commits = shmem::intake_commits();
        let poll = Duration::from_millis(guc::poll_interval_ms());
        if !self.more && self.seen == Some(commits) && self.last.elapsed() < poll {
            return Ok(0);
        }
        let most = MOVE_BATCHES * guc::batch_size();
        let moved = installed_transaction(|c| pipeline::route_intake(c, most))?.unwrap_or(0);
        (self.seen, self.last, self.more) = (Some(commits), Instant::now(), moved == most);
        Ok(moved)
    }
}

/// A move takes up to this many batches (see [`Intake`]): moving an event
/// costs the worker about what claiming, sending and settling it does.
const MOVE_BATCHES: usize = 4;

/// Longest sleep while requests are out: their results are settled at least
/// this often, even when few come back.
const SETTLE_EVERY: Duration = Duration::from_millis(20);

fn report_activity(text: &std::ffi::CStr) {
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr()) };
}

/// Wait for the latch (unless `latch` is false: it stays set for later),
/// finished HTTP jobs, or the timeout.
fn wait(fd: std::os::fd::RawFd, timeout: Duration, latch: bool) {
    let mut events = pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    if latch {
        events |= pg_sys::WL_LATCH_SET;
    }
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
        if latch {
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
    }
}

pub(super) fn run(index: usize) {
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
    // When the last claim (or move) started, and whether it was full.
    let mut last_take = Instant::now()
        .checked_sub(TAKE_EVERY)
        .unwrap_or_else(Instant::now);
    let mut more = false;
    let mut intake = Intake::new();
    // Commits wake the worker unless it is waiting for its next claim.
    let mut latch = true;
    loop {
        wait(waker.fd(), sleep, std::mem::replace(&mut latch, true));
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
        if let Some(rest) = too_soon(last_take, more) {
            (sleep, latch) = (sleep.min(rest), false);
            continue;
        }
        let started = Instant::now();
        // In every mode: shadow events are recorded all the same.
        let moved = intake.route().unwrap_or_else(|err| {
            note_error(index, &mut last_error, &format!("intake: {err}"));
            0
        });
        if moved > 0 {
            last_take = started;
        }
        more = intake.more;
        if more {
            sleep = Duration::ZERO;
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
            sleep = sleep.min(SETTLE_EVERY);
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
            if claimed.count > 0 {
                // Their results wake the loop; rows a rate limit put back are
                // due when it said. Asking the database when the next row is
                // due would hold these requests back until this transaction
                // commits.
                let deferred = claimed.deferred_until_ms.map(|at| {
                    Duration::from_millis(at.saturating_sub(now_ms()).max(MIN_NAP_MS) as u64)
                });
                return Ok((claimed.jobs, deferred));
            }
            // A row can be due yet unclaimable (its endpoint has a full batch
            // out): the floor keeps that from becoming a busy loop.
            let due = pipeline::next_due_ms(c)?
                .map(|ms| Duration::from_millis(ms.max(MIN_NAP_MS) as u64));
            Ok((claimed.jobs, due))
        });
        match claimed {
            Ok(Some((jobs, due))) => {
                if !jobs.is_empty() {
                    last_take = started;
                }
                more = more || due == Some(Duration::ZERO);
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
        match installed_transaction(render_metrics) {
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

/// The text of `webhook_outbox.metrics()` (sql/metrics.sql, so that psql, an
/// exporter and this listener read the same numbers). An ERROR inside is
/// raised, not returned: call it where errors are caught (the worker's
/// transactions).
pub(crate) fn render_metrics(
    client: &mut pgrx::spi::SpiClient<'_>,
) -> pgrx::spi::Result<Option<String>> {
    client
        .select("SELECT webhook_outbox.metrics()", None, &[])?
        .first()
        .get_one::<String>()
}

/// SIGTERM: claim nothing more, give back what has not started, let running
/// requests finish (for `SHUTDOWN_GRACE` at most), settle everything.
fn shutdown(mut e: Engine, waker: &Waker) {
    e.release_queued();
    let deadline = Instant::now() + e.timeout().min(SHUTDOWN_GRACE);
    while !e.idle() && Instant::now() < deadline {
        wait(waker.fd(), Duration::from_millis(50), true);
        waker.clear();
    }
    match installed_transaction(|c| e.settle(c)) {
        Ok(_) => e.settled(),
        Err(err) => {
            warning!("webhook_outbox: settling at shutdown failed, leases will expire: {err}")
        }
    }
}
