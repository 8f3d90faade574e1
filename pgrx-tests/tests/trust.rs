//! Safe in a database shared with less-trusted roles: nothing the worker or
//! an operator runs resolves to another role's objects, a schema planted under
//! the extension's name is never called, and a failing `create_endpoint`
//! leaves no secret in the server log.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use postgres::Client;
use serde_json::json;
use webhook_outbox_it::outbox::{self, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster, Receiver, Reply};

/// Twins, in `public`, of the functions and operators the extension's
/// statements use: for each, one with the exact argument types (which beats
/// pg_catalog's when pg_catalog needs an implicit cast or is polymorphic), and
/// exact copies of pg_catalog's own (which win wherever `public` is searched
/// first). Each one, run by a superuser, makes `app` a superuser.
const TWINS: &str = r#"
CREATE FUNCTION public.pwn() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- Logged with its CONTEXT: which twin ran, called from where.
    RAISE WARNING 'a twin in public ran as %', current_user;
    EXECUTE 'ALTER ROLE app SUPERUSER';
END $$;
CREATE FUNCTION public.mul_bi(bigint, interval) RETURNS interval LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1::float8 * $2; END $$;
CREATE OPERATOR public.* (LEFTARG = bigint, RIGHTARG = interval, FUNCTION = public.mul_bi);
CREATE FUNCTION public.mul_fi(float8, interval) RETURNS interval LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.*) $2; END $$;
CREATE OPERATOR public.* (LEFTARG = float8, RIGHTARG = interval, FUNCTION = public.mul_fi);
CREATE FUNCTION public.div_bn(bigint, numeric) RETURNS numeric LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1::numeric / $2; END $$;
CREATE OPERATOR public./ (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.div_bn);
CREATE FUNCTION public.mul_ni(numeric, integer) RETURNS numeric LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 * $2::numeric; END $$;
CREATE OPERATOR public.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.mul_ni);
CREATE FUNCTION public.add_ti(timestamptz, interval) RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.+) $2; END $$;
CREATE OPERATOR public.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = public.add_ti);
CREATE FUNCTION public.sub_ti(timestamptz, interval) RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.-) $2; END $$;
CREATE OPERATOR public.- (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = public.sub_ti);
CREATE FUNCTION public.eq_bb(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.eq_bb);
CREATE FUNCTION public.le_bb(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.<=) $2; END $$;
CREATE OPERATOR public.<= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.le_bb);
CREATE FUNCTION public.add_bi(bigint, integer) RETURNS bigint LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.+) $2; END $$;
CREATE OPERATOR public.+ (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.add_bi);
CREATE FUNCTION public.eq_tt(text, text) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.eq_tt);
CREATE FUNCTION public.eq_uu(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = public.eq_uu);
CREATE FUNCTION public.to_timestamp(numeric) RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.to_timestamp($1::float8); END $$;
CREATE FUNCTION public.to_timestamp(float8) RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.to_timestamp($1); END $$;
CREATE FUNCTION public.cardinality(text[]) RETURNS integer LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.cardinality($1); END $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION public.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.gen_random_uuid(); END $$;
CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION public.date_part(text, timestamptz) RETURNS float8 LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.date_part($1, $2); END $$;
CREATE FUNCTION public.round(float8) RETURNS float8 LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.round($1); END $$;
CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.current_setting($1); END $$;
CREATE FUNCTION public.array_positions(bigint[], bigint) RETURNS integer[] LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN pg_catalog.array_positions($1, $2); END $$;
CREATE FUNCTION public.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.unnest(integer[]) RETURNS SETOF integer LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.unnest(uuid[]) RETURNS SETOF uuid LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.unnest(float8[]) RETURNS SETOF float8 LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
-- Type names that are not SQL keywords resolve through the search_path too:
-- a domain's CHECK runs whenever a value is assigned to it.
CREATE FUNCTION public.pwn_ok(anyelement) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.pwn(); RETURN true; END $$;
CREATE DOMAIN public.text AS pg_catalog.text CHECK (public.pwn_ok(VALUE));
CREATE DOMAIN public.timestamptz AS pg_catalog.timestamptz CHECK (public.pwn_ok(VALUE));
CREATE DOMAIN public.float8 AS pg_catalog.float8 CHECK (public.pwn_ok(VALUE));
CREATE DOMAIN public.uuid AS pg_catalog.uuid CHECK (public.pwn_ok(VALUE));
"#;

fn is_superuser(db: &mut Client, role: &str) -> bool {
    db.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role]).expect("pg_roles").get(0)
}

/// A role that owns the database the worker serves: it may create objects in
/// `public` (PostgreSQL 15 gives `public` to the database owner).
fn app_owns_the_database(cluster: &Cluster) {
    cluster
        .client()
        .batch_execute("CREATE ROLE app LOGIN; ALTER DATABASE postgres OWNER TO app")
        .expect("create the app role");
}

#[test]
fn twins_in_public_never_run_as_superuser() {
    let cluster = Cluster::start(&[("webhook_outbox.retry_schedule", "100ms,200ms,400ms,800ms")]);
    app_owns_the_database(&cluster);
    let mut app = cluster.connect("app", "postgres");
    app.batch_execute(TWINS).expect("app plants its twins in public");

    // The twins are live: where public comes first, resolution picks them
    // (run by app, the ALTER ROLE inside is refused).
    for probe in [
        "SELECT 2::bigint * interval '1 millisecond'",
        "SELECT to_timestamp(1700000000000 / 1000.0)",
        "SELECT cardinality(ARRAY['a']::pg_catalog.text[])",
        "SELECT unnest(ARRAY[1]::bigint[])",
        "DO $$ DECLARE t text[] := ARRAY['x']; BEGIN END $$",
    ] {
        let err = app.batch_execute(&format!("SET search_path = public, pg_catalog; {probe}")).expect_err(probe);
        assert!(format!("{err:?}").contains("ALTER ROLE app SUPERUSER"), "{probe} did not reach a twin: {err:?}");
    }
    app.batch_execute("RESET search_path").expect("reset");

    // The test's own bookkeeping runs in a session with the default path.
    let mut db = cluster.client();

    // The worker restarts (and reads the twins' database afresh).
    let old = cluster.worker_pids();
    db.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type LIKE 'webhook_outbox%'", &[])
        .expect("terminate");
    assert!(
        wait_until(Duration::from_secs(15), || cluster
            .try_worker_pids()
            .is_ok_and(|p| !p.is_empty() && p.iter().all(|p| !old.contains(p)))),
        "the worker did not come back"
    );

    // Delivers, retries, defers a rate-limited delivery, releases jobs.
    let rx = Receiver::http(vec![Reply::status(500), Reply::ok()]);
    let fast = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    let retried = outbox::enqueue(&mut db, fast.id, &json!({"n": 1}));
    outbox::wait_for_status(&mut db, retried, "sent", Duration::from_secs(20));
    let slow =
        outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts { rate_limit_rps: Some(2.0), ..Default::default() });
    let limited = outbox::enqueue_seq(&mut db, slow.id, 3);
    for id in &limited {
        outbox::wait_for_status(&mut db, *id, "sent", Duration::from_secs(20));
    }
    // Paused: queued jobs go back (release), then resume.
    let hanging = Receiver::http(vec![Reply::ok().after(Duration::from_millis(300))]);
    let held = outbox::create_endpoint(&mut db, &hanging.url(), &EndpointOpts::default());
    let many = outbox::enqueue_seq(&mut db, held.id, 200);
    hanging.wait_for_requests(1, Duration::from_secs(10));
    cluster.set_conf("webhook_outbox.mode", "shadow");
    std::thread::sleep(Duration::from_secs(1));
    cluster.set_conf("webhook_outbox.mode", "on");
    outbox::wait_for_status(&mut db, *many.last().expect("rows"), "sent", Duration::from_secs(60));

    // An operator's session with public first, as a careless superuser might
    // have it, runs only the extension's procedures and functions.
    let mut op = cluster.client();
    op.batch_execute("SET search_path = public, pg_catalog").expect("search_path");
    op.batch_execute("CALL webhook_outbox.cleanup_in_batches(sent_older_than => '0 seconds')")
        .expect("cleanup_in_batches");
    outbox::enqueue(&mut db, fast.id, &json!({"n": 2}));
    op.query_one("SELECT webhook_outbox.run_once()", &[]).expect("run_once");
    // emit and enqueue fix no search_path (they run in application triggers):
    // their one statement is qualified. Their plan is made here, in this session.
    op.query_one("SELECT webhook_outbox.emit('test.event', '{\"n\": 3}', subject_id => 'user-1')", &[]).expect("emit");
    for _ in 0..2 {
        // The second call finds the delivery the first created.
        op.query_one("SELECT webhook_outbox.enqueue($1, 'test.event', '{\"n\": 4}', 'evt-op')", &[&fast.id])
            .expect("enqueue");
    }
    op.query("SELECT webhook_outbox.metrics()", &[]).expect("metrics");
    op.query("SELECT * FROM webhook_outbox.v_webhook_health_dashboard", &[]).expect("dashboard");
    // The worker has moved the emitted event through its own statements too.
    outbox::wait_for_intake(&mut db, Duration::from_secs(5));

    assert!(!is_superuser(&mut db, "app"), "a twin in public ran as superuser");
    assert!(!cluster.log().contains("a twin in public ran as postgres"), "a twin ran as superuser");
}

/// `GET /metrics` on `port`: the body, or an empty string when refused.
fn scrape(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// A schema named like the extension's, made by a role, whose functions
/// record that they were called (and would make `app` a superuser).
/// Tables and functions with the shapes the worker's statements expect, so
/// that without the installation check its claim would run them.
const PLANTED: &str = r#"
CREATE SCHEMA webhook_outbox;
CREATE TABLE public.called (what text, at timestamptz DEFAULT now());
CREATE TABLE webhook_outbox.endpoints (id bigint, url text, secret text, headers jsonb, rate_limit_rps float8);
CREATE TABLE webhook_outbox.deliveries (id bigint, endpoint_id bigint, event_id text, payload jsonb,
                                        attempt_count integer, max_attempts integer, lease_token uuid);
CREATE FUNCTION webhook_outbox._claim(integer, interval, bigint[] DEFAULT '{}') RETURNS SETOF webhook_outbox.deliveries
    LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO public.called (what) VALUES ('_claim'); EXECUTE 'ALTER ROLE app SUPERUSER'; END $$;
CREATE FUNCTION webhook_outbox._next_due() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO public.called (what) VALUES ('_next_due'); EXECUTE 'ALTER ROLE app SUPERUSER'; RETURN now(); END $$;
CREATE FUNCTION webhook_outbox._ms_until(timestamptz) RETURNS bigint LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO public.called (what) VALUES ('_ms_until'); EXECUTE 'ALTER ROLE app SUPERUSER'; RETURN 0; END $$;
CREATE FUNCTION webhook_outbox.metrics() RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO public.called (what) VALUES ('metrics'); EXECUTE 'ALTER ROLE app SUPERUSER'; RETURN 'planted'; END $$;
"#;

fn assert_never_called(cluster: &Cluster, metrics_port: u16, db: &str) {
    // Several poll intervals, and scrapes, while the planted functions wait.
    for _ in 0..3 {
        let body = scrape(metrics_port);
        assert!(!body.contains("planted"), "a scrape ran the planted metrics(): {body}");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(scrape(metrics_port).contains("not installed"), "the scrape says why it has nothing");
    let mut su = cluster.connect("postgres", db);
    let called: i64 = su.query_one("SELECT count(*) FROM public.called", &[]).expect("called").get(0);
    assert_eq!(called, 0, "the worker called into the planted schema");
    assert!(!is_superuser(&mut su, "app"));
}

#[test]
fn a_planted_schema_is_never_called() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let listen = format!("127.0.0.1:{port}");
    let cluster = Cluster::start(&[("webhook_outbox.metrics_listen", &listen)]);
    app_owns_the_database(&cluster);
    assert!(wait_until(Duration::from_secs(10), || !scrape(port).is_empty()), "listener up");

    // After DROP EXTENSION (and the DBA's removal of the schema it leaves
    // behind, which no other role could write to), the role plants one.
    cluster
        .client()
        .batch_execute("DROP EXTENSION webhook_outbox; DROP SCHEMA webhook_outbox")
        .expect("drop extension");
    cluster.connect("app", "postgres").batch_execute(PLANTED).expect("plant");
    assert_never_called(&cluster, port, "postgres");

    // A database that never had the extension: the worker serves it from the start.
    cluster.client().batch_execute("CREATE DATABASE appdb OWNER app").expect("createdb");
    cluster.connect("app", "appdb").batch_execute(PLANTED).expect("plant in appdb");
    cluster.client().batch_execute("ALTER SYSTEM SET webhook_outbox.database = 'appdb'").expect("alter system");
    cluster.restart_immediate();
    let _ = cluster.reconnect(Duration::from_secs(30));
    assert!(wait_until(Duration::from_secs(10), || !scrape(port).is_empty()), "listener up again");
    assert_never_called(&cluster, port, "appdb");

    // Nor does CREATE EXTENSION install into the schema that role made.
    let err = cluster
        .connect("postgres", "appdb")
        .batch_execute("CREATE EXTENSION webhook_outbox")
        .expect_err("CREATE EXTENSION into a planted schema");
    let db_err = err.as_db_error().expect("an ERROR");
    assert_eq!(db_err.code().code(), "42501", "{err:?}");
    assert!(db_err.message().contains("schema webhook_outbox already exists"), "{err:?}");
}

#[test]
fn a_failed_create_endpoint_logs_no_secret() {
    let cluster = Cluster::start(&[]);
    let mut db = cluster.client();
    let secret = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWRvLW5vdC1sb2ctbWUtMTIzNA==";
    db.query_one("SELECT webhook_outbox.create_endpoint('https://example.com/a', 'taken', secret => $1)", &[&secret])
        .expect("first endpoint");
    let failing = [
        // A duplicate name, a bad URL, a bad header: each statement holds the secrets.
        format!("SELECT webhook_outbox.create_endpoint('https://example.com/b', 'taken', secret => '{secret}')"),
        format!("SELECT webhook_outbox.create_endpoint('ftp://example.com/token-in-url', secret => '{secret}')"),
        // Errors that quote the URL quote its scheme and host only.
        format!("SELECT webhook_outbox.create_endpoint('example.com/hook?key=token-in-query', secret => '{secret}')"),
        format!("SELECT webhook_outbox.create_endpoint('https://:8443/token-in-path', secret => '{secret}')"),
        format!("SELECT webhook_outbox.create_endpoint('/token-in-path?next=https://x', secret => '{secret}')"),
        format!(
            "SELECT webhook_outbox.create_endpoint('https://example.com/c', secret => '{secret}', \
             headers => '{{\"x-api-key\": \"hdr-value-do-not-log\", \"bad header\": \"x\"}}')"
        ),
    ];
    for sql in &failing {
        db.batch_execute(sql).expect_err(sql);
    }
    let log = cluster.log();
    assert!(log.contains("already exists"), "the errors are logged:\n{log}");
    for needle in [secret, "hdr-value-do-not-log", "token-in-url", "token-in-query", "token-in-path"] {
        assert!(!log.contains(needle), "{needle} is in the server log:\n{log}");
    }
}

#[test]
fn pg_dump_keeps_endpoints_flags_and_the_outbox() {
    // The worker serves "restored", which does not exist yet: the source
    // database's deliveries stay pending, as in a backup taken mid-queue.
    let cluster = Cluster::start(&[("webhook_outbox.database", "restored")]);
    let rx = Receiver::http(vec![Reply::ok()]);
    let mut src = cluster.client();
    let ep =
        outbox::create_endpoint(&mut src, &rx.url(), &EndpointOpts { max_attempts: Some(7), ..Default::default() });
    let ids = outbox::enqueue_seq(&mut src, ep.id, 5);
    // And an event emit() wrote, still in the intake: nothing moves it here.
    src.batch_execute("SELECT webhook_outbox.emit('test.event', '{\"n\": \"emitted\"}', 'emitted-1')").expect("emit");
    src.batch_execute(
        "SELECT webhook_outbox.set_rollout('checkout', 10, description => 'canary');
         SELECT webhook_outbox.allowlist_add('checkout', 'qa-1');",
    )
    .expect("flags");
    src.batch_execute(&format!("SELECT webhook_outbox.update_endpoint({}, name => 'restored-one')", ep.id))
        .expect("update");
    let audit = "SELECT (SELECT count(*) FROM webhook_outbox.feature_flag_changes)
                      + (SELECT count(*) FROM webhook_outbox.endpoint_changes)";
    let audit_before: i64 = src.query_one(audit, &[]).unwrap().get(0);

    let dump = cluster.tool("pg_dump", &["-d", "postgres"]).stdout;
    let file = cluster.dir().join("dump.sql");
    std::fs::write(&file, dump).expect("write dump");
    cluster.tool("createdb", &["restored"]);
    let file = file.display().to_string();
    cluster.tool("psql", &["-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", "restored", "-f", &file]);

    let mut dst = cluster.connect("postgres", "restored");
    let row = dst
        .query_one("SELECT url, secret, max_attempts FROM webhook_outbox.endpoints WHERE id = $1", &[&ep.id])
        .expect("restored endpoint");
    assert_eq!(row.get::<_, String>(0), rx.url());
    assert_eq!(row.get::<_, String>(1), ep.secret, "the secret survives");
    assert_eq!(row.get::<_, Option<i32>>(2), Some(7));
    let flag = dst
        .query_one(
            "SELECT percentage, allowlist, description FROM webhook_outbox.feature_flags WHERE flag_key = 'checkout'",
            &[],
        )
        .expect("restored flag");
    assert_eq!(flag.get::<_, i32>(0), 10);
    assert_eq!(flag.get::<_, Vec<String>>(1), vec!["qa-1".to_owned()]);
    let audit_after: i64 = dst.query_one(audit, &[]).unwrap().get(0);
    assert_eq!(audit_after, audit_before, "the audit trails are restored as they were");
    // New ids continue after the restored ones.
    let next = outbox::enqueue(&mut dst, ep.id, &json!({"after": "restore"}));
    assert!(next > *ids.iter().max().unwrap(), "new id {next} collides with restored ones");

    // The worker finds the restored outbox and delivers it, signed with the restored secret.
    for id in ids.iter().chain([&next]) {
        outbox::wait_for_status(&mut dst, *id, "sent", Duration::from_secs(30));
    }
    outbox::wait_for_all(&mut dst, ep.id, "sent", Duration::from_secs(30));
    let requests = rx.wait_for_requests(7, Duration::from_secs(5));
    assert!(requests.iter().any(|r| r.webhook_id() == "emitted-1"), "the emitted event was lost");
    for r in &requests {
        r.verify_signature(&ep.secret).expect("signature with the restored secret");
    }
}
