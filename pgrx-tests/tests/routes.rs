//! Where emit() sends an event, across sessions. emit() caches each event
//! type's endpoints per session (src/api/routes.rs, kept fresh like the
//! rollout flags): a committed endpoint change must reach every other session
//! at its very next statement, a session's own change at once, and a
//! rolled-back one nobody. Without the preload nothing is cached, and the
//! same must hold.

use postgres::Client;
use webhook_outbox_it::Cluster;

/// How many endpoints emit() routed an event of type 't' to.
fn routed(db: &mut Client) -> i32 {
    db.query_one("SELECT webhook_outbox.emit('t', '{}')", &[]).expect("emit").get(0)
}

fn create(db: &mut Client, host: &str) -> i64 {
    db.query_one(
        "SELECT webhook_outbox.create_endpoint($1, event_types => ARRAY['t'])",
        &[&format!("https://{host}.example.com/hook")],
    )
    .expect("create_endpoint")
    .get(0)
}

fn endpoint_changes_reach_the_next_statement_of_every_session(cluster: &Cluster) {
    let (mut admin, mut app) = (cluster.client(), cluster.client());
    let a = create(&mut admin, "a");
    for _ in 0..3 {
        assert_eq!(routed(&mut app), 1, "one endpoint, cached from the second call");
    }

    // Uncommitted: the admin sees its own change, the app does not.
    admin.batch_execute("BEGIN").unwrap();
    create(&mut admin, "b");
    assert_eq!(routed(&mut admin), 2, "own change, before commit");
    assert_eq!(routed(&mut app), 1, "another session's uncommitted change");
    admin.batch_execute("ROLLBACK").unwrap();
    assert_eq!(routed(&mut admin), 1, "the rollback undid the admin's view too");
    assert_eq!(routed(&mut app), 1);

    let b = create(&mut admin, "b");
    assert_eq!(routed(&mut app), 2, "the very next statement after the commit");
    admin.execute("UPDATE webhook_outbox.endpoints SET enabled = false WHERE id = $1", &[&a]).unwrap();
    assert_eq!(routed(&mut app), 1, "a disabled endpoint");
    admin.execute("DELETE FROM webhook_outbox.endpoints WHERE id = $1", &[&b]).unwrap();
    assert_eq!(routed(&mut app), 0, "a deleted endpoint");
    admin.execute("UPDATE webhook_outbox.endpoints SET enabled = true WHERE id = $1", &[&a]).unwrap();
    assert_eq!(routed(&mut app), 1);
}

#[test]
fn endpoint_changes_reach_every_session_at_once_when_preloaded() {
    let cluster = Cluster::start(&[("webhook_outbox.workers", "0")]);
    endpoint_changes_reach_the_next_statement_of_every_session(&cluster);

    // The cache is real: a write that skips the trigger goes unseen until the
    // generation moves.
    let (mut admin, mut app) = (cluster.client(), cluster.client());
    assert_eq!(routed(&mut app), 1);
    admin
        .batch_execute(
            "BEGIN;
             ALTER TABLE webhook_outbox.endpoints DISABLE TRIGGER endpoints_changed;
             UPDATE webhook_outbox.endpoints SET enabled = false;
             ALTER TABLE webhook_outbox.endpoints ENABLE TRIGGER endpoints_changed;
             COMMIT",
        )
        .unwrap();
    assert_eq!(routed(&mut app), 1, "served from the cache");
    assert_eq!(routed(&mut cluster.client()), 0, "a new session reads the table");
    admin.batch_execute("SELECT webhook_outbox._rollout_changed()").unwrap();
    assert_eq!(routed(&mut app), 0, "reloaded once the generation moved");
}

#[test]
fn endpoint_changes_reach_every_session_at_once_without_preload() {
    let cluster = Cluster::start(&[("shared_preload_libraries", "")]);
    endpoint_changes_reach_the_next_statement_of_every_session(&cluster);
}
