//! `get_ready_deliveries` from several sessions at once: SKIP LOCKED never
//! hands a row out twice, and an expired lease is reclaimed. The cluster runs
//! no worker (`webhook_outbox.workers = 0`) so only the tests claim.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use postgres::Client;
use webhook_outbox_it::outbox::{create_endpoint, enqueue_seq, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster};

fn cluster_with_backlog(n: i32) -> (Cluster, i64) {
    let cluster = Cluster::start(&[("webhook_outbox.workers", "0")]);
    // Never contacted: nothing but the tests claims.
    let endpoint = create_endpoint(&mut cluster.client(), "http://127.0.0.1:9/unused", &EndpointOpts::default());
    enqueue_seq(&mut cluster.client(), endpoint.id, n);
    (cluster, endpoint.id)
}

fn claim(db: &mut Client, batch: i32, lease: &str) -> Vec<i64> {
    db.query("SELECT id FROM webhook_outbox.get_ready_deliveries($1, $2::text::interval)", &[&batch, &lease])
        .expect("get_ready_deliveries")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn open_transactions_never_share_a_row() {
    let (cluster, _) = cluster_with_backlog(100);
    let (mut a, mut b) = (cluster.client(), cluster.client());
    a.batch_execute("BEGIN").unwrap();
    b.batch_execute("BEGIN").unwrap();
    let first = claim(&mut a, 30, "1 hour");
    // `a` still holds its row locks: `b` must skip them, not wait, not reuse.
    let second = claim(&mut b, 30, "1 hour");
    a.batch_execute("COMMIT").unwrap();
    b.batch_execute("COMMIT").unwrap();

    assert_eq!((first.len(), second.len()), (30, 30), "each session gets a full batch");
    let overlap: Vec<_> = first.iter().filter(|id| second.contains(id)).collect();
    assert!(overlap.is_empty(), "rows handed to both sessions: {overlap:?}");
    let leased: i64 =
        a.query_one("SELECT count(*) FROM webhook_outbox.deliveries WHERE locked_until > now()", &[]).unwrap().get(0);
    assert_eq!(leased, 60);
}

#[test]
fn concurrent_rounds_never_hand_out_a_row_twice() {
    const ROWS: i32 = 2000;
    let (cluster, _) = cluster_with_backlog(ROWS);
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let mut db = cluster.client();
            thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let batch = claim(&mut db, 7, "1 hour");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let per_session: Vec<Vec<i64>> = claimers.into_iter().map(|t| t.join().expect("claimer")).collect();

    let total: usize = per_session.iter().map(Vec::len).sum();
    let distinct: HashSet<i64> = per_session.iter().flatten().copied().collect();
    println!("claims per session: {:?}", per_session.iter().map(Vec::len).collect::<Vec<_>>());
    assert_eq!(total, distinct.len(), "{} rows were claimed twice", total - distinct.len());
    assert_eq!(distinct.len(), ROWS as usize, "every row claimed once");
}

#[test]
fn expired_lease_is_reclaimed() {
    let (cluster, _) = cluster_with_backlog(1);
    let mut db = cluster.client();
    let first = claim(&mut db, 10, "1 second");
    assert_eq!(first.len(), 1);
    assert!(claim(&mut db, 10, "1 second").is_empty(), "a leased row must not be claimed again");

    let mut again = Vec::new();
    let reclaimed = wait_until(Duration::from_secs(5), || {
        again = claim(&mut db, 10, "1 hour");
        !again.is_empty()
    });
    assert!(reclaimed, "the row was not reclaimed after its lease expired");
    assert_eq!(again, first);
    let attempts: i32 =
        db.query_one("SELECT attempt_count FROM webhook_outbox.deliveries WHERE id = $1", &[&first[0]]).unwrap().get(0);
    assert_eq!(attempts, 2, "each claim counts an attempt");
}
