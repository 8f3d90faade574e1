//! webhook_outbox: a transactional webhook outbox and its sender, inside PostgreSQL.
//!
//! The module layout follows the data: `api` and `schema` (SQL surface) →
//! the `deliveries` table → `worker` (the background process) running
//! `pipeline` (one delivery pass: claim, rate limit, HTTP, settle; `run_once`
//! runs it too) → `settle` (results back in one transaction). `shmem` holds
//! every shared-memory segment, `pg` the Postgres helpers (errors, the plan
//! cache), `guc` every setting, `rollout` the canary flags, `config_cache` what keeps
//! the per-session caches of flags and routes fresh.
//!
//! What never calls into Postgres is the `webhook_outbox_core` crate (`core/`):
//! HTTP, signing and the SSRF guard (`delivery`), the delivery thread
//! (`dispatch`), the retry and breaker rules (`outcome`, `circuit`), rate
//! limits, rollout buckets, backfill's line check and the `/metrics` listener.

// Every SQL function reports its errors as pgrx's `ErrorReport` (SQLSTATE,
// message, hint), a large value: boxing it would only move the allocation.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

mod api;
mod config_cache;
mod guc;
mod pg;
mod pipeline;
mod rollout;
mod schema;
mod settle;
mod shmem;
mod worker;

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Shared memory and workers exist only when loaded by shared_preload_libraries;
    // otherwise the SQL API still works and run_once() delivers from a session.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    guc::init(preloading);
    if !preloading {
        return;
    }
    shmem::init();
    worker::register();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // No worker in the #[pg_test] cluster: those tests run in rolled-back
        // transactions the worker would never see. Worker tests live in pgrx-tests/.
        vec![
            "shared_preload_libraries='webhook_outbox'",
            "webhook_outbox.workers=0",
        ]
    }
}
