//! Canary rollout flags. `should_emit_event` and `rollout_decision` answer from
//! a per-backend cache of `webhook_outbox.feature_flags` (see `cache`); the
//! decision itself is the pure logic of `webhook_outbox_core::bucket`. Tables,
//! audit, management functions and the status view are SQL, in `sql/rollout.sql`.

mod cache;

pub(crate) use cache::decision;

use pgrx::prelude::*;
use webhook_outbox_core::bucket;

// SECURITY DEFINER so that a role with only EXECUTE can read the flags, but no
// `SET search_path`: that would save and restore a GUC on every call of a
// function meant for per-row use. Nothing here resolves an unqualified name
// (the one query, in `cache`, is fully schema-qualified).
//
// VOLATILE: the answer may change between two calls of one statement (a
// committed rollback takes effect at once). Parallel unsafe: a cache miss reads
// with the latest snapshot, which a parallel query does not allow.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
fn should_emit_event(flag_key: Option<&str>, subject_id: Option<&str>) -> bool {
    cache::decision(flag_key, subject_id).emit
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
fn rollout_decision(
    flag_key: Option<&str>,
    subject_id: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(emit, bool),
        name!(reason, String),
        name!(bucket, Option<i32>),
    ),
> {
    let d = cache::decision(flag_key, subject_id);
    TableIterator::once((
        d.emit,
        d.reason.as_str().to_owned(),
        d.bucket.map(i32::from),
    ))
}

/// Computes `feature_flags.phase` (a stored generated column, so that roles
/// granted only `v_rollout_status` need no EXECUTE on it).
#[pg_extern(immutable, strict, parallel_safe)]
fn _rollout_phase(enabled: bool, percentage: i32) -> &'static str {
    bucket::phase(enabled, percentage)
}

/// Called by the trigger on `feature_flags` after every change.
#[pg_extern(volatile, parallel_unsafe)]
fn _rollout_changed() {
    crate::config_cache::changed()
}
