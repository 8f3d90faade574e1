//! The SQL objects, kept in `sql/` as SQL, one file per area, loaded here in
//! dependency order: tables first (bootstrap: the Rust functions return their
//! row types), privileges last (finalize).

use pgrx::prelude::*;

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../../sql/rollout.sql",
    name = "rollout",
    requires = [
        "schema",
        should_emit_event,
        rollout_decision,
        _rollout_phase,
        _rollout_changed
    ]
);
extension_sql_file!("../../sql/time.sql", name = "time", requires = ["schema"]);
extension_sql_file!(
    "../../sql/enqueue.sql",
    name = "enqueue",
    requires = [
        "schema",
        _setting,
        _default_max_attempts,
        emit,
        enqueue,
        _wake_trigger
    ]
);
extension_sql_file!(
    "../../sql/claim.sql",
    name = "claim",
    requires = [
        "schema",
        "enqueue",
        _setting,
        _webhook_headers,
        _worker_serves_here
    ]
);
extension_sql_file!(
    "../../sql/endpoints.sql",
    name = "endpoints",
    requires = [
        "schema",
        "enqueue",
        create_endpoint,
        update_endpoint,
        rotate_secret,
        _public_key,
        _endpoints_changed,
        _wake_trigger
    ]
);
extension_sql_file!(
    "../../sql/operations.sql",
    name = "operations",
    requires = ["schema", "enqueue", _setting]
);
extension_sql_file!(
    "../../sql/attempts.sql",
    name = "attempts",
    requires = ["schema", record_attempt, _update_webhook_health, run_once]
);
extension_sql_file!(
    "../../sql/retention.sql",
    name = "retention",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/replay.sql",
    name = "replay",
    requires = ["retention"]
);
extension_sql_file!(
    "../../sql/backfill.sql",
    name = "backfill",
    requires = ["enqueue", backfill]
);
extension_sql_file!(
    "../../sql/views.sql",
    name = "views",
    requires = ["schema", _worker_status]
);
extension_sql_file!(
    "../../sql/metrics.sql",
    name = "metrics",
    requires = ["views", "rollout"]
);
extension_sql_file!(
    "../../sql/backup.sql",
    name = "backup",
    requires = ["replay", "backfill", "rollout", "endpoints", "operations"]
);
extension_sql_file!("../../sql/privileges.sql", name = "privileges", finalize);
