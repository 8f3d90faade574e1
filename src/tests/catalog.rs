//! The public surface as the catalog shows it: signatures, comments, privileges.

use super::{assert_fails, column, maybe, one, run};
use pgrx::prelude::*;

/// Objects of schema webhook_outbox, as `regclass`/`regprocedure` text, that match `filter`.
fn objects(filter: &str) -> Vec<String> {
    column(&format!(
        "SELECT name FROM (
             SELECT c.oid::regclass::text AS name, c.relkind::text AS kind, obj_description(c.oid, 'pg_class') AS comment,
                    has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                    OR (c.relkind = 'S' AND has_sequence_privilege('public', c.oid, 'USAGE, SELECT, UPDATE')) AS public_access
             FROM pg_class c
             WHERE c.relnamespace = 'webhook_outbox'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
             UNION ALL
             SELECT p.oid::regprocedure::text, 'f', obj_description(p.oid, 'pg_proc'),
                    has_function_privilege('public', p.oid, 'EXECUTE')
             FROM pg_proc p
             WHERE p.pronamespace = 'webhook_outbox'::regnamespace
         ) o
         WHERE {filter}
         ORDER BY name"
    ))
}

/// The public signatures, defaults included. New parameters go last, with
/// defaults (emit gained `flag`), so that calls as written still work.
#[pg_test(schema = "tests")]
fn catalog_api_signatures_and_defaults() {
    let expected = [
        ("create_endpoint", "url text, name text DEFAULT NULL::text, event_types text[] DEFAULT NULL::text[], secret text DEFAULT NULL::text, rate_limit_rps double precision DEFAULT NULL::double precision, max_attempts integer DEFAULT NULL::integer, headers jsonb DEFAULT '{}'::jsonb, retry_schedule text DEFAULT NULL::text, signing text DEFAULT NULL::text", "bigint"),
        ("update_endpoint", "endpoint_id bigint, url text DEFAULT NULL::text, name text DEFAULT NULL::text, event_types text[] DEFAULT NULL::text[], rate_limit_rps double precision DEFAULT NULL::double precision, max_attempts integer DEFAULT NULL::integer, headers jsonb DEFAULT NULL::jsonb, reset text[] DEFAULT NULL::text[], retry_schedule text DEFAULT NULL::text", "boolean"),
        ("disable_endpoint", "endpoint_id bigint, reason text", "boolean"),
        ("rotate_secret", "endpoint_id bigint, new_secret text DEFAULT NULL::text, overlap interval DEFAULT '24:00:00'::interval", "text"),
        ("public_keys", "endpoint_id bigint", "TABLE(public_key text, valid_until timestamp with time zone)"),
        ("enable_endpoint", "endpoint_id bigint", "boolean"),
        ("delete_endpoint", "endpoint_id bigint, dead_reason text DEFAULT NULL::text", "bigint"),
        ("enqueue", "endpoint_id bigint, event_type text, payload jsonb, event_id text DEFAULT NULL::text, subject_id text DEFAULT NULL::text", "bigint"),
        ("emit", "event_type text, payload jsonb, event_id text DEFAULT NULL::text, subject_id text DEFAULT NULL::text", "integer"),
        ("get_ready_deliveries", "batch_size integer DEFAULT 10, lease interval DEFAULT '00:00:30'::interval", "SETOF webhook_outbox.ready_delivery"),
        ("record_attempt", "delivery_id bigint, lease_token uuid, status_code integer, response_time_ms integer, error text DEFAULT NULL::text, retry_after interval DEFAULT NULL::interval", "text"),
        ("update_webhook_health", "webhook_id bigint, status_code integer, response_time_ms integer, error text DEFAULT NULL::text", "webhook_outbox.health_metrics"),
        ("requeue_dead", "max_rows integer DEFAULT 100, endpoint_id bigint DEFAULT NULL::bigint, dry_run boolean DEFAULT false", "bigint"),
        ("cleanup", "sent_older_than interval DEFAULT '14 days'::interval, shadow_older_than interval DEFAULT '7 days'::interval, dead_older_than interval DEFAULT '30 days'::interval, dry_run boolean DEFAULT false, events_older_than interval DEFAULT '30 days'::interval", "TABLE(status text, deleted bigint)"),
        ("count_pending_by_status", "", "TABLE(status text, count bigint, oldest timestamp with time zone)"),
        ("run_once", "max_rows integer DEFAULT 1000", "bigint"),
    ];
    for (f, args, result) in expected {
        let (got_args, got_result) = Spi::get_two::<String, String>(&format!(
            "SELECT pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)
             FROM pg_proc p WHERE p.oid = 'webhook_outbox.{f}'::regproc"
        ))
        .unwrap_or_else(|e| panic!("{f}: {e}"));
        let got_args = got_args.unwrap_or_default();
        // Appended parameters need defaults, or calls as written would break.
        let appended = got_args
            .strip_prefix(args)
            .map(|rest| rest.trim_start_matches(", "));
        assert!(
            appended.is_some_and(
                |rest| rest.is_empty() || rest.split(", ").all(|p| p.contains(" DEFAULT "))
            ),
            "{f}({got_args}), expected {f}({args})"
        );
        assert_eq!(got_result.as_deref(), Some(result), "{f}");
    }
}

#[pg_test(schema = "tests")]
fn catalog_every_public_object_has_a_comment() {
    // Tables, views and functions whose name does not start with "_".
    let missing = objects("comment IS NULL AND kind IN ('r', 'p', 'v', 'm', 'f') AND name !~ '^(webhook_outbox\\.)?_'");
    assert_eq!(missing, Vec::<String>::new(), "objects without COMMENT ON");
    let commented = objects("comment IS NOT NULL");
    for name in [
        "webhook_outbox.endpoints",
        "webhook_outbox.v_worker_status",
        "webhook_outbox.enqueue(",
    ] {
        assert!(
            commented.iter().any(|c| c.starts_with(name)),
            "{name} in {commented:?}"
        );
    }
}

#[pg_test(schema = "tests")]
fn catalog_public_has_no_privileges() {
    // delivery_state(), the lease rule it asks, a URL's origin and a flag's
    // phase read no table: the views and a generated column call them with
    // the reader's or the writer's rights.
    let pure = [
        "webhook_outbox._leased(timestamp with time zone)",
        "webhook_outbox._rollout_phase(boolean,integer)",
        "webhook_outbox._url_origin(text)",
        "webhook_outbox.delivery_state(text,timestamp with time zone)",
    ];
    assert_eq!(objects("public_access"), pure, "objects PUBLIC may use");
    assert!(!one::<bool>(
        "SELECT has_function_privilege('public', 'webhook_outbox.enqueue(bigint,text,jsonb,text,text)', 'EXECUTE')"
    ));
    assert!(!one::<bool>(
        "SELECT has_table_privilege('public', 'webhook_outbox.endpoints', 'SELECT')"
    ));
    // The check itself sees a grant.
    run("GRANT EXECUTE ON FUNCTION webhook_outbox.count_pending_by_status() TO PUBLIC");
    assert_eq!(
        objects("public_access"),
        [
            pure[0],
            pure[1],
            pure[2],
            "webhook_outbox.count_pending_by_status()",
            pure[3]
        ]
    );
}

#[pg_test(schema = "tests")]
fn catalog_no_view_exposes_the_secret() {
    let views = objects("kind = 'v'");
    assert!(views.len() >= 6, "{views:?}");
    let secret_columns = maybe::<String>(
        "SELECT string_agg(c.relname || '.' || a.attname, ', ')
         FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = 'webhook_outbox'::regnamespace AND c.relkind IN ('v', 'm')
           AND a.attnum > 0 AND a.attname ILIKE '%secret%'",
    );
    assert_eq!(secret_columns, None);
    // Nor under another name: no view reads endpoints.secret at all.
    let readers = maybe::<String>(
        "SELECT string_agg(DISTINCT r.ev_class::regclass::text, ', ')
         FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
         WHERE d.classid = 'pg_rewrite'::regclass
           AND d.refobjid = 'webhook_outbox.endpoints'::regclass
           AND d.refobjsubid = (SELECT attnum FROM pg_attribute
                                WHERE attrelid = 'webhook_outbox.endpoints'::regclass AND attname = 'secret')",
    );
    assert_eq!(readers, None);
}

#[pg_test(schema = "tests")]
fn catalog_a_view_only_role_cannot_read_secrets() {
    super::endpoint("");
    run("CREATE ROLE webhook_outbox_test_viewer");
    run("GRANT USAGE ON SCHEMA webhook_outbox TO webhook_outbox_test_viewer");
    run(
        "GRANT SELECT ON webhook_outbox.v_webhook_health_dashboard, webhook_outbox.v_dead_letters,
                         webhook_outbox.v_queue_status
         TO webhook_outbox_test_viewer",
    );
    super::enqueue(super::endpoint(""));
    run("SET LOCAL ROLE webhook_outbox_test_viewer");
    // Every column: a function a view calls runs with the reader's rights.
    assert_eq!(
        one::<i64>(
            "SELECT count(*) FROM (SELECT * FROM webhook_outbox.v_webhook_health_dashboard OFFSET 0) v
             WHERE v.url IS NOT NULL"
        ),
        2
    );
    assert_eq!(
        one::<String>("SELECT string_agg(status, ',') FROM webhook_outbox.v_queue_status"),
        "pending"
    );
    assert_fails(
        "SELECT secret FROM webhook_outbox.endpoints",
        "42501",
        "permission denied for table endpoints",
    );
    assert_fails(
        "SELECT webhook_outbox.create_endpoint('https://example.com/')",
        "42501",
        "permission denied for function create_endpoint",
    );
    run("RESET ROLE");
}

/// Every function of the schema, called with NULL for each argument, answers
/// with NULL, a value or an ERROR with a specific SQLSTATE: never an internal
/// error (XX000), which would mean a NULL reached code that assumed a value.
#[pg_test(schema = "tests")]
fn catalog_null_arguments_never_give_an_internal_error() {
    // Something for functions that look rows up to find.
    super::enqueue(super::endpoint(""));
    run("CREATE TEMP TABLE null_calls (call text, state text)");
    run(r#"
        DO $$
        DECLARE
            f record;
            call text;
        BEGIN
            FOR f IN
                SELECT p.oid::regproc::text AS name,
                       (SELECT string_agg('NULL::' || format_type(t, NULL), ', ' ORDER BY o)
                        FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, o)) AS args
                FROM pg_proc p
                WHERE p.pronamespace = 'webhook_outbox'::regnamespace
                  AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
            LOOP
                call := format('SELECT %s(%s)', f.name, coalesce(f.args, ''));
                BEGIN
                    EXECUTE call;
                    INSERT INTO null_calls VALUES (call, '00000');
                EXCEPTION WHEN OTHERS THEN
                    INSERT INTO null_calls VALUES (call, SQLSTATE);
                END;
            END LOOP;
        END
        $$"#);
    let calls = one::<i64>("SELECT count(*) FROM null_calls");
    assert!(calls > 30, "only {calls} functions called");
    let internal =
        maybe::<String>("SELECT string_agg(call, '; ') FROM null_calls WHERE state = 'XX000'");
    assert_eq!(internal, None, "internal errors on NULL arguments");
}

/// Every SECURITY DEFINER function fixes its search_path, but those meant
/// for per-row use (the two flag lookups, and emit and enqueue, called from
/// application triggers), whose statements are fully qualified (src/rollout,
/// src/api/events.rs); and every fixed search_path puts pg_catalog first: no
/// other schema can supply an operator or function that pg_catalog also has.
#[pg_test(schema = "tests")]
fn catalog_search_paths_list_pg_catalog_first() {
    let unpinned = maybe::<String>(
        "SELECT string_agg(p.oid::regprocedure::text, ', ')
         FROM pg_proc p
         WHERE p.pronamespace = 'webhook_outbox'::regnamespace AND p.prosecdef
           AND p.proname NOT IN ('should_emit_event', 'rollout_decision', 'emit', 'enqueue')
           AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')",
    );
    assert_eq!(unpinned, None, "SECURITY DEFINER without a search_path");
    let wrong = maybe::<String>(
        "SELECT string_agg(p.oid::regprocedure::text || ' (' || c || ')', ', ')
         FROM pg_proc p, unnest(p.proconfig) c
         WHERE p.pronamespace = 'webhook_outbox'::regnamespace
           AND c LIKE 'search_path=%' AND c NOT LIKE 'search_path=pg_catalog,%'",
    );
    assert_eq!(wrong, None, "search_path without pg_catalog first");
    let pinned = one::<i64>(
        "SELECT count(*) FROM pg_proc p, unnest(p.proconfig) c
         WHERE p.pronamespace = 'webhook_outbox'::regnamespace AND c LIKE 'search_path=%'",
    );
    assert!(pinned > 30, "only {pinned} functions pin their search_path");
}
