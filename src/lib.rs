//! webhook_outbox: a transactional webhook outbox and its sender, inside PostgreSQL.
//!
//! The module layout follows the data: `api` and `schema` (SQL surface) →
//! the `deliveries` table → `worker` (background worker, shared memory) →
//! `delivery` (HTTP, signing, SSRF guard; no pgrx) → `settle` (results back in
//! one transaction, decided by `outcome` and `circuit`).

use pgrx::prelude::*;

mod api;
mod circuit;
pub mod delivery;
mod guc;
mod outcome;
mod plans;
mod rollout;
mod schema;
mod settle;
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
    worker::shmem::init();
    rollout::init_shmem();
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
