//! Shared memory, every segment of it: each worker's latch and status, the
//! rate-limit table, and the generation of the rollout flags. Exists only
//! when the library is preloaded; `available()` says so.

use crate::guc::MAX_WORKERS;
use pgrx::callbacks::{register_xact_callback, PgXactCallbackEvent};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use webhook_outbox_core::ratelimit::RateTable;

const ERROR_BYTES: usize = 256;

/// One worker's slot. Times are Unix milliseconds; `pid` 0 = not running.
#[derive(Clone, Copy)]
pub struct WorkerSlot {
    pub pid: i32,
    pub latch: u64,
    pub started_at_ms: i64,
    pub last_active_ms: i64,
    pub sent: u64,
    pub failed: u64,
    pub last_error_at_ms: i64,
    last_error: [u8; ERROR_BYTES],
    last_error_len: u16,
}

impl Default for WorkerSlot {
    fn default() -> Self {
        WorkerSlot {
            pid: 0,
            latch: 0,
            started_at_ms: 0,
            last_active_ms: 0,
            sent: 0,
            failed: 0,
            last_error_at_ms: 0,
            last_error: [0; ERROR_BYTES],
            last_error_len: 0,
        }
    }
}

impl WorkerSlot {
    pub fn set_error(&mut self, message: &str, now_ms: i64) {
        // Cut on a char boundary so the text stays valid UTF-8.
        let mut n = message.len().min(ERROR_BYTES);
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        self.last_error[..n].copy_from_slice(&message.as_bytes()[..n]);
        self.last_error_len = n as u16;
        self.last_error_at_ms = now_ms;
    }
    pub fn last_error(&self) -> Option<String> {
        (self.last_error_len > 0).then(|| {
            String::from_utf8_lossy(&self.last_error[..self.last_error_len as usize]).into_owned()
        })
    }
}

#[derive(Clone, Copy)]
pub struct Workers {
    pub slots: [WorkerSlot; MAX_WORKERS],
}

/// The rate-limit table (GCRA, in `webhook_outbox_core::ratelimit`), shared
/// so that a limit holds across all workers.
#[derive(Clone, Copy, Default)]
pub struct Rates(pub RateTable);

unsafe impl PGRXSharedMemory for Workers {}
unsafe impl PGRXSharedMemory for Rates {}

pub static WORKERS: PgLwLock<Workers> = unsafe { PgLwLock::new(c"webhook_outbox_workers") };
pub static RATES: PgLwLock<Rates> = unsafe { PgLwLock::new(c"webhook_outbox_rates") };

/// Moved on by every committed change of `feature_flags` or `endpoints`: the
/// per-session caches (`config_cache`) hold entries for one value of it.
pub static GENERATION: PgAtomic<AtomicU64> =
    unsafe { PgAtomic::new(c"webhook_outbox_config_generation") };

/// Moved on by every committed transaction that wrote the intake (emit()):
/// the worker moves the intake only when it has moved since its last look.
pub static INTAKE: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"webhook_outbox_intake_commits") };

/// Set in the postmaster before it forks, so every backend inherits it.
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init` when preloading.
pub fn init() {
    pg_shmem_init!(
        WORKERS = Workers {
            slots: [WorkerSlot::default(); MAX_WORKERS]
        }
    );
    pg_shmem_init!(RATES = Rates::default());
    AVAILABLE.store(true, Ordering::Relaxed);
    pg_shmem_init!(GENERATION);
    pg_shmem_init!(INTAKE);
}

pub fn available() -> bool {
    AVAILABLE.load(Ordering::Relaxed)
}

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
    static WAKE_REGISTERED: Cell<bool> = const { Cell::new(false) };
    static INTAKE_WRITTEN: Cell<bool> = const { Cell::new(false) };
}

/// Called by a worker process at its start: its own commits wake nobody.
pub fn mark_worker() {
    IN_WORKER.set(true);
}

/// Set the workers' latches when the current transaction commits (once per
/// transaction, however many events it wrote): what emit() (`intake`: it
/// wrote the intake) and the trigger on deliveries call.
pub fn wake_workers_at_commit(intake: bool) {
    if IN_WORKER.get() || !available() {
        return;
    }
    if intake {
        INTAKE_WRITTEN.set(true);
    }
    if WAKE_REGISTERED.replace(true) {
        return;
    }
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        WAKE_REGISTERED.set(false);
        if INTAKE_WRITTEN.replace(false) {
            INTAKE.get().fetch_add(1, Ordering::Release);
        }
        wake_all();
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || {
        WAKE_REGISTERED.set(false);
        INTAKE_WRITTEN.set(false);
    });
}

/// How many transactions have written the intake (see `INTAKE`).
pub fn intake_commits() -> u64 {
    INTAKE.get().load(Ordering::Acquire)
}

/// Set every running worker's latch. Called from commit callbacks: it must
/// not raise an error.
fn wake_all() {
    if !available() {
        return;
    }
    let workers = WORKERS.share();
    for slot in workers.slots.iter().filter(|s| s.pid != 0 && s.latch != 0) {
        // The latch lives in the worker's PGPROC, in shared memory mapped at
        // the same address in every backend.
        unsafe { pg_sys::SetLatch(slot.latch as *mut pg_sys::Latch) };
    }
}

/// Run `f` on this worker's slot.
pub fn with_slot<R>(index: usize, f: impl FnOnce(&mut WorkerSlot) -> R) -> R {
    f(&mut WORKERS.exclusive().slots[index])
}
