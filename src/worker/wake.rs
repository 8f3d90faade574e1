//! Waking the workers when a transaction that queued deliveries commits: the
//! statement trigger on deliveries (emit() calls `shmem` itself).

use crate::shmem;
use pgrx::prelude::*;

/// The statement trigger on `deliveries` (sql/enqueue.sql): a C function, as
/// it fires for every statement that queues deliveries (enqueue, replay).
#[pg_trigger]
fn _wake_trigger<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    shmem::wake_workers_at_commit(false);
    Ok(None)
}
