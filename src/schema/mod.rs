//! The SQL objects, kept in `sql/` as SQL. Order: tables first (the Rust
//! functions return their row types), grants last.

use pgrx::prelude::*;

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../../sql/deliveries.sql",
    name = "deliveries",
    requires = ["schema", guc::_setting]
);
extension_sql_file!(
    "../../sql/views.sql",
    name = "views",
    requires = ["deliveries"]
);
extension_sql_file!("../../sql/privileges.sql", name = "privileges", finalize);
extension_sql_file!(
    "../../sql/outbox.sql",
    name = "outbox",
    requires = ["deliveries", api::_check_event_key]
);
extension_sql_file!(
    "../../sql/operations.sql",
    name = "operations",
    requires = ["deliveries"]
);
extension_sql_file!(
    "../../sql/metrics.sql",
    name = "metrics",
    requires = ["deliveries", "rollout"]
);
extension_sql_file!(
    "../../sql/backup.sql",
    name = "backup",
    requires = ["deliveries", "operations", "rollout"]
);
