//! Rollout flags across sessions. A committed flag change must reach every
//! other session at its very next statement, even one that has the flag
//! cached (preloaded: a generation counter in shared memory) and even inside
//! its own open transaction; a rolled-back change must reach nobody. Without
//! the preload nothing is cached, and the same must hold.

use postgres::Client;
use webhook_outbox_it::Cluster;

fn should_emit(db: &mut Client, flag: &str, subject: &str) -> bool {
    db.query_one("SELECT webhook_outbox.should_emit_event($1, $2)", &[&flag, &subject])
        .expect("should_emit_event")
        .get(0)
}

fn disable_flag_reaches_the_next_statement_of_every_session(cluster: &Cluster) {
    let (mut admin, mut app) = (cluster.client(), cluster.client());
    admin.batch_execute("SELECT webhook_outbox.set_rollout('checkout', 100)").unwrap();
    for _ in 0..3 {
        assert!(should_emit(&mut app, "checkout", "user-1"), "on, and cached from the second call");
    }

    // Uncommitted: the admin sees its own change, the app does not.
    admin.batch_execute("BEGIN; SELECT webhook_outbox.disable_flag('checkout')").unwrap();
    assert!(!should_emit(&mut admin, "checkout", "user-1"), "own change, before commit");
    assert!(should_emit(&mut app, "checkout", "user-1"), "another session's uncommitted change");
    admin.batch_execute("ROLLBACK").unwrap();
    assert!(should_emit(&mut admin, "checkout", "user-1"), "the rollback undid the admin's view too");
    assert!(should_emit(&mut app, "checkout", "user-1"));

    admin.batch_execute("SELECT webhook_outbox.disable_flag('checkout')").unwrap();
    assert!(!should_emit(&mut app, "checkout", "user-1"), "the very next statement after the commit");

    // Inside a REPEATABLE READ transaction that started before the change.
    admin.batch_execute("SELECT webhook_outbox.set_rollout('checkout', 100)").unwrap();
    app.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").unwrap();
    assert!(should_emit(&mut app, "checkout", "user-1"));
    admin.batch_execute("SELECT webhook_outbox.disable_flag('checkout')").unwrap();
    assert!(!should_emit(&mut app, "checkout", "user-1"), "a rollback is not held back by the app's snapshot");
    app.batch_execute("COMMIT").unwrap();

    // Direct table writes go through the same trigger.
    admin.batch_execute("UPDATE webhook_outbox.feature_flags SET enabled = true WHERE flag_key = 'checkout'").unwrap();
    assert!(should_emit(&mut app, "checkout", "user-1"), "a direct UPDATE is seen too");
}

#[test]
fn disable_flag_reaches_every_session_at_once_when_preloaded() {
    let cluster = Cluster::start(&[("webhook_outbox.workers", "0"), ("max_prepared_transactions", "2")]);
    disable_flag_reaches_the_next_statement_of_every_session(&cluster);

    // The cache is real: a write that skips the trigger goes unseen until the
    // generation moves.
    let (mut admin, mut app) = (cluster.client(), cluster.client());
    assert!(should_emit(&mut app, "checkout", "user-1"));
    admin
        .batch_execute(
            "BEGIN;
             ALTER TABLE webhook_outbox.feature_flags DISABLE TRIGGER feature_flags_changed;
             UPDATE webhook_outbox.feature_flags SET enabled = false WHERE flag_key = 'checkout';
             ALTER TABLE webhook_outbox.feature_flags ENABLE TRIGGER feature_flags_changed;
             COMMIT",
        )
        .unwrap();
    assert!(should_emit(&mut app, "checkout", "user-1"), "served from the cache");
    assert!(!should_emit(&mut cluster.client(), "checkout", "user-1"), "a new session reads the table");
    admin.batch_execute("SELECT webhook_outbox._rollout_changed()").unwrap();
    assert!(!should_emit(&mut app, "checkout", "user-1"), "reloaded once the generation moved");

    // COMMIT PREPARED would run in a session that cannot tell the others.
    admin.batch_execute("BEGIN; SELECT webhook_outbox.set_rollout('checkout', 50)").unwrap();
    let refused = admin.batch_execute("PREPARE TRANSACTION 'flags'").expect_err("PREPARE must be refused");
    let code = refused.code().map(|c| c.code().to_owned());
    assert_eq!(code.as_deref(), Some("0A000"), "{refused:?}");
}

#[test]
fn disable_flag_reaches_every_session_at_once_without_preload() {
    let cluster = Cluster::start(&[("shared_preload_libraries", "")]);
    disable_flag_reaches_the_next_statement_of_every_session(&cluster);
}
