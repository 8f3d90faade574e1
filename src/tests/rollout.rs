//! `#[pg_test]`s of the rollout SQL surface, each in a rolled-back transaction
//! (so commit-time invalidation across sessions is tested in
//! pgrx-tests/tests/rollout.rs instead).

use super::{assert_fails, error_of, maybe, one, run};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

fn should_emit(flag: &str, subject: &str) -> bool {
    Spi::get_one_with_args(
        "SELECT webhook_outbox.should_emit_event($1, $2)",
        &[flag.into(), subject.into()],
    )
    .expect("should_emit_event")
    .expect("never NULL")
}

/// (emit, reason, bucket) from rollout_decision.
fn decision(flag: &str, subject: Option<&str>) -> (bool, String, Option<i32>) {
    let subject = subject.map_or_else(DatumWithOid::null::<&str>, DatumWithOid::from);
    let (emit, reason, bucket) = Spi::get_three_with_args::<bool, String, i32>(
        "SELECT emit, reason, bucket FROM webhook_outbox.rollout_decision($1, $2)",
        &[flag.into(), subject],
    )
    .expect("rollout_decision");
    (emit.expect("emit"), reason.expect("reason"), bucket)
}

#[pg_test(schema = "tests")]
fn rollout_precedence_disabled_denylist_allowlist() {
    run("SELECT webhook_outbox.set_rollout('p', 100)");
    run("SELECT webhook_outbox.denylist_add('p', 'banned')");
    run("SELECT webhook_outbox.allowlist_add('p', 'vip')");
    run("SELECT webhook_outbox.allowlist_add('p', 'both'), webhook_outbox.denylist_add('p', 'both')");
    assert!(!decision("p", Some("banned")).0, "denylist beats 100%");
    assert_eq!(
        decision("p", Some("both")).1,
        "denylist",
        "denylist beats the allowlist"
    );
    assert_eq!(
        decision("p", Some("anyone")),
        (true, "percentage".into(), Some(93)),
        "bucket of 'anyone'"
    );

    run("SELECT webhook_outbox.set_rollout('p', 0)");
    assert_eq!(
        decision("p", Some("vip")),
        (true, "allowlist".into(), None),
        "allowlist beats 0%"
    );
    assert!(!decision("p", Some("anyone")).0);

    run("SELECT webhook_outbox.disable_flag('p')");
    assert_eq!(
        decision("p", Some("vip")),
        (false, "disabled".into(), None),
        "disabled beats the allowlist"
    );
    assert_eq!(
        decision("nope", Some("vip")),
        (false, "unknown_flag".into(), None)
    );
    assert!(!maybe::<bool>("SELECT webhook_outbox.should_emit_event(NULL, 'vip')").expect("bool"));
}

#[pg_test(schema = "tests")]
fn rollout_percentage_zero_and_hundred() {
    run("SELECT webhook_outbox.set_rollout('z', 0)");
    let admitted =
        "SELECT count(*) FILTER (WHERE webhook_outbox.should_emit_event('z', 'user-' || i))
                    FROM generate_series(1, 500) i";
    assert_eq!(maybe::<i64>(admitted), Some(0));
    run("SELECT webhook_outbox.set_rollout('z', 100)");
    assert_eq!(maybe::<i64>(admitted), Some(500));
    // A NULL subject has no bucket: only 100% lets it through.
    assert_eq!(decision("z", None), (true, "percentage".into(), None));
    run("SELECT webhook_outbox.set_rollout('z', 99)");
    assert_eq!(decision("z", None), (false, "percentage".into(), None));
}

#[pg_test(schema = "tests")]
fn rollout_bucket_equals_the_sql_md5_expression() {
    run("SELECT webhook_outbox.set_rollout('b', 50)");
    run("SELECT webhook_outbox.set_rollout('s', 50, salt => 'checkout-v2')");
    let mismatches = maybe::<i64>(
        "SELECT count(*)
         FROM generate_series(1, 2000) i,
              LATERAL (VALUES ('user-' || i), ('josé-' || i || '-日本')) AS s(subject),
              LATERAL webhook_outbox.rollout_decision('b', s.subject) plain,
              LATERAL webhook_outbox.rollout_decision('s', s.subject) salted
         WHERE plain.bucket IS DISTINCT FROM ('x' || substr(md5(s.subject), 1, 8))::bit(32)::bigint % 100
            OR salted.bucket IS DISTINCT FROM ('x' || substr(md5('checkout-v2:' || s.subject), 1, 8))::bit(32)::bigint % 100
            OR plain.emit IS DISTINCT FROM (('x' || substr(md5(s.subject), 1, 8))::bit(32)::bigint % 100 < 50)",
    );
    assert_eq!(mismatches, Some(0));
}

#[pg_test(schema = "tests")]
fn rollout_changes_are_audited() {
    run("SELECT webhook_outbox.set_rollout('a', 2, description => 'canary')");
    run("SELECT webhook_outbox.allowlist_add('a', 'u1')");
    assert_eq!(
        maybe::<bool>("SELECT webhook_outbox.allowlist_add('a', 'u1')"),
        Some(false),
        "already there"
    );
    run("SELECT webhook_outbox.disable_flag('a')");
    run("UPDATE webhook_outbox.feature_flags SET percentage = 10 WHERE flag_key = 'a'");
    run("DELETE FROM webhook_outbox.feature_flags WHERE flag_key = 'a'");

    let trail: Vec<String> = Spi::connect(|client| {
        client
            .select(
                "SELECT format('%s %s -> %s', operation, coalesce(old_value ->> 'percentage', '-'),
                               coalesce(new_value ->> 'percentage', '-'))
                        || coalesce(' enabled=' || (new_value ->> 'enabled'), '')
                        || coalesce(' allowlist=' || (new_value -> 'allowlist')::text, '')
                 FROM webhook_outbox.feature_flag_changes
                 WHERE flag_key = 'a' AND changed_by = session_user AND changed_at = now()
                 ORDER BY id",
                None,
                &[],
            )?
            .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()
    })
    .expect("audit trail");
    assert_eq!(
        trail,
        [
            "INSERT - -> 2 enabled=true allowlist=[]",
            "UPDATE 2 -> 2 enabled=true allowlist=[\"u1\"]",
            "UPDATE 2 -> 2 enabled=false allowlist=[\"u1\"]",
            "UPDATE 2 -> 10 enabled=false allowlist=[\"u1\"]",
            "DELETE 10 -> -",
        ],
        "one row per change (none for the no-op), direct statements included"
    );
}

#[pg_test(schema = "tests")]
fn rollout_status_view_shows_phases_and_counts() {
    for (key, pct) in [
        ("f0", 0),
        ("f2", 2),
        ("f10", 10),
        ("f50", 50),
        ("f100", 100),
        ("f70", 70),
    ] {
        Spi::run_with_args(
            "SELECT webhook_outbox.set_rollout($1, $2)",
            &[key.into(), pct.into()],
        )
        .expect("set_rollout");
    }
    run("SELECT webhook_outbox.set_rollout('off', 50, enabled => false)");
    run("SELECT webhook_outbox.allowlist_add('f2', 'a'), webhook_outbox.allowlist_add('f2', 'b'), webhook_outbox.denylist_add('f2', 'c')");
    let phases = maybe::<String>(
        "SELECT string_agg(flag_key || '=' || phase, ' ' ORDER BY percentage, flag_key) FROM webhook_outbox.v_rollout_status",
    );
    assert_eq!(
        phases.as_deref(),
        Some("f0=disabled f2=canary_2pct f10=canary_10pct f50=canary_50pct off=disabled f70=full_rollout f100=full_rollout")
    );
    let f2 = Spi::get_three::<i32, i32, String>(
        "SELECT allowlist_size, denylist_size, last_changed_by::text FROM webhook_outbox.v_rollout_status WHERE flag_key = 'f2'",
    )
    .expect("f2");
    let user = maybe::<String>("SELECT session_user::text");
    assert_eq!(f2, (Some(2), Some(1), user));
}

#[pg_test(schema = "tests")]
fn rollout_bad_input_is_a_clear_error() {
    run("SELECT webhook_outbox.set_rollout('known', 10, salt => 'one')");
    let cases = [
        (
            "SELECT webhook_outbox.set_rollout('k', -1)",
            "22023: percentage must be between 0 and 100, got -1",
        ),
        (
            "SELECT webhook_outbox.set_rollout('k', 101)",
            "22023: percentage must be between 0 and 100, got 101",
        ),
        (
            "SELECT webhook_outbox.set_rollout('k', NULL)",
            "22004: percentage must not be NULL",
        ),
        (
            "SELECT webhook_outbox.set_rollout('k', 5, NULL)",
            "22004: enabled must not be NULL",
        ),
        (
            "SELECT webhook_outbox.set_rollout(NULL, 5)",
            "22004: flag_key must not be NULL",
        ),
        (
            "SELECT webhook_outbox.set_rollout('  ', 5)",
            "22023: flag_key must not be empty",
        ),
        (
            "SELECT webhook_outbox.set_rollout('k', 5, salt => '')",
            "22023: salt must not be empty",
        ),
        (
            "SELECT webhook_outbox.set_rollout('known', 5, salt => 'two')",
            "55000: the salt of feature flag \"known\" cannot change",
        ),
        (
            "SELECT webhook_outbox.allowlist_add('missing', 'u')",
            "42704: feature flag \"missing\" does not exist",
        ),
        (
            "SELECT webhook_outbox.allowlist_remove('missing', 'u')",
            "42704: feature flag \"missing\" does not exist",
        ),
        (
            "SELECT webhook_outbox.denylist_add('missing', 'u')",
            "42704: feature flag \"missing\" does not exist",
        ),
        (
            "SELECT webhook_outbox.denylist_remove('missing', 'u')",
            "42704: feature flag \"missing\" does not exist",
        ),
        (
            "SELECT webhook_outbox.disable_flag('missing')",
            "42704: feature flag \"missing\" does not exist",
        ),
        (
            "SELECT webhook_outbox.disable_flag('')",
            "22023: flag_key must not be empty",
        ),
        (
            "SELECT webhook_outbox.allowlist_add(NULL, 'u')",
            "22004: flag_key must not be NULL",
        ),
        (
            "SELECT webhook_outbox.allowlist_add('known', NULL)",
            "22004: subject_id must not be NULL",
        ),
        (
            "SELECT webhook_outbox.denylist_add('known', '')",
            "22023: subject_id must not be empty",
        ),
    ];
    for (statement, expected) in cases {
        let (state, message) = error_of(statement);
        assert_eq!(format!("{state}: {message}"), expected, "{statement}");
    }
    // The same salt again is not a change.
    run("SELECT webhook_outbox.set_rollout('known', 20, salt => 'one')");
}

#[pg_test(schema = "tests")]
fn rollout_changes_are_seen_at_once_by_the_session_that_made_them() {
    run("SELECT webhook_outbox.set_rollout('t', 100)");
    assert!(should_emit("t", "u"), "cached as on");
    run("SELECT webhook_outbox.disable_flag('t')");
    assert!(!should_emit("t", "u"), "own change, before commit");

    // An EXCEPTION block rolls back a change this session had already seen.
    run("SELECT webhook_outbox.set_rollout('t', 100)");
    run(
        "CREATE FUNCTION pg_temp.undone() RETURNS boolean LANGUAGE plpgsql AS $$
         DECLARE seen boolean;
         BEGIN
             BEGIN
                 PERFORM webhook_outbox.disable_flag('t');
                 seen := webhook_outbox.should_emit_event('t', 'u');
                 RAISE EXCEPTION 'undo';
             EXCEPTION WHEN raise_exception THEN
                 RETURN seen;
             END;
         END $$",
    );
    assert_eq!(
        maybe::<bool>("SELECT pg_temp.undone()"),
        Some(false),
        "inside the block the flag is off"
    );
    assert!(
        should_emit("t", "u"),
        "after the rollback of the block it is on again"
    );
}

#[pg_test(schema = "tests")]
fn rollout_emit_with_a_flag() {
    run(
        "SELECT webhook_outbox.create_endpoint('https://a.example.com/hook'),
                webhook_outbox.create_endpoint('https://b.example.com/hook')",
    );
    run("SELECT webhook_outbox.set_rollout('e', 0)");
    run("SELECT webhook_outbox.allowlist_add('e', 'vip')");
    let emit = |subject: &str, flag: &str| -> i32 {
        Spi::get_one_with_args(
            "SELECT webhook_outbox.emit('order.paid', '{}', subject_id => $1, flag => NULLIF($2, ''))",
            &[subject.into(), flag.into()],
        )
        .expect("emit")
        .expect("rows")
    };
    assert_eq!(emit("someone", "e"), 0, "0%: not emitted");
    assert_eq!(emit("vip", "e"), 2, "allowlisted: one row per endpoint");
    assert_eq!(emit("vip", "unknown"), 0, "unknown flag: not emitted");
    assert_eq!(emit("someone", ""), 2, "no flag: emitted as before");
    assert_eq!(
        maybe::<i32>("SELECT webhook_outbox.emit('order.paid', '{}', 'id-4', 'x')"),
        Some(2),
        "4 arguments"
    );
    super::route();
    assert_eq!(
        maybe::<String>(
            "SELECT string_agg(s, ' ' ORDER BY s COLLATE \"C\")
             FROM (SELECT DISTINCT coalesce(flag_key, '-') || ':' || subject_id AS s FROM webhook_outbox.deliveries) rows"
        ),
        Some("-:someone -:x e:vip".into())
    );
    let counts = Spi::get_two::<i64, i64>(
        "SELECT events_last_hour, events_last_24h FROM webhook_outbox.v_rollout_status WHERE flag_key = 'e'",
    )
    .expect("v_rollout_status");
    assert_eq!(counts, (Some(1), Some(1)), "one event, two delivery rows");
}

/// A role allowed to change a flag directly is audited, and cannot write the
/// trail itself.
#[pg_test(schema = "tests")]
fn direct_flag_changes_are_audited_with_the_changers_name() {
    run("SELECT webhook_outbox.set_rollout('b', 5)");
    run("CREATE ROLE webhook_outbox_test_flagger");
    run("GRANT USAGE ON SCHEMA webhook_outbox TO webhook_outbox_test_flagger");
    run("GRANT SELECT, UPDATE (percentage) ON webhook_outbox.feature_flags TO webhook_outbox_test_flagger");
    run("SET LOCAL SESSION AUTHORIZATION webhook_outbox_test_flagger");
    run("UPDATE webhook_outbox.feature_flags SET percentage = 50 WHERE flag_key = 'b'");
    assert_fails(
        "INSERT INTO webhook_outbox.feature_flag_changes (flag_key, operation) VALUES ('b', 'UPDATE')",
        "42501",
        "permission denied",
    );
    run("RESET SESSION AUTHORIZATION");
    assert_eq!(
        one::<String>(
            "SELECT operation || '|' || changed_by || '|' || (new_value ->> 'percentage')
             FROM webhook_outbox.feature_flag_changes WHERE flag_key = 'b' ORDER BY id DESC LIMIT 1"
        ),
        "UPDATE|webhook_outbox_test_flagger|50"
    );
}
