-- What pg_dump keeps. An extension's tables are recreated by CREATE
-- EXTENSION on restore, so pg_dump writes none of their rows unless they are
-- registered here: configuration (endpoints with their secrets, flags), the
-- outbox with everything not yet delivered, and the history operators read
-- (attempts, health, audits, backfill reports). Every row is kept: a restore
-- is a copy of the database, and retention (cleanup()) decides what history
-- is worth its space. The identity sequences go with their tables, so new ids
-- never collide with restored ones.
SELECT pg_catalog.pg_extension_config_dump('endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('endpoints_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('endpoint_changes', '');
SELECT pg_catalog.pg_extension_config_dump('endpoint_changes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('deliveries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('intake', '');
SELECT pg_catalog.pg_extension_config_dump('intake_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('attempts', '');
SELECT pg_catalog.pg_extension_config_dump('health_metrics', '');
SELECT pg_catalog.pg_extension_config_dump('feature_flags', '');
SELECT pg_catalog.pg_extension_config_dump('feature_flag_changes', '');
SELECT pg_catalog.pg_extension_config_dump('feature_flag_changes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('backfill_runs', '');
SELECT pg_catalog.pg_extension_config_dump('backfill_runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('backfill_errors', '');
SELECT pg_catalog.pg_extension_config_dump('replay_log', '');
SELECT pg_catalog.pg_extension_config_dump('operational_events', '');
SELECT pg_catalog.pg_extension_config_dump('operational_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('replay_log_id_seq', '');
