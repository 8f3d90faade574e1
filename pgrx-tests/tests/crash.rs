//! At-least-once across crashes: the worker killed with SIGKILL, or the
//! whole server stopped with `-m immediate`, mid-batch. Every delivery still
//! ends `sent` and reaches the receiver; duplicates are allowed and counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use webhook_outbox_it::outbox::{create_endpoint, enqueue_seq, statuses, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster, Receiver, Reply, LEASE};

const ROWS: i32 = 2000;

/// Enqueues `ROWS` deliveries to a slow-ish receiver, runs `crash` once a
/// part of them has arrived, then checks that none is lost.
fn survives(crash: impl FnOnce(&Cluster)) {
    let cluster = Cluster::start(&[]);
    // ~20 ms a request keeps the batch in flight long enough to hit it.
    let rx = Receiver::http(vec![Reply::ok().after(Duration::from_millis(20))]);
    let endpoint = {
        let mut db = cluster.client();
        let ep = create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
        enqueue_seq(&mut db, ep.id, ROWS);
        ep.id
    };
    rx.wait_for_requests(200, Duration::from_secs(30));

    let crashed = Instant::now();
    crash(&cluster);
    let arrived_before = rx.request_count();
    let mut db = cluster.reconnect(Duration::from_secs(30));
    println!("back {:?} after the crash; {arrived_before} requests had arrived", crashed.elapsed());

    let all_sent = wait_until(LEASE + Duration::from_secs(60), || {
        statuses(&mut db, endpoint) == [("sent".to_owned(), i64::from(ROWS))]
    });
    assert!(all_sent, "not all sent: {:?}", statuses(&mut db, endpoint));
    println!("all {ROWS} sent {:?} after the crash", crashed.elapsed());

    // Every seq reached the receiver, always under one webhook-id.
    let mut seen: HashMap<i64, Vec<String>> = HashMap::new();
    for req in rx.requests() {
        let seq = req.json()["seq"].as_i64().expect("seq in payload");
        seen.entry(seq).or_default().push(req.webhook_id().to_owned());
    }
    let missing: Vec<_> = (1..=i64::from(ROWS)).filter(|seq| !seen.contains_key(seq)).collect();
    assert!(missing.is_empty(), "{} deliveries never reached the receiver: {missing:?}", missing.len());
    let duplicates: usize = seen.values().map(|ids| ids.len() - 1).sum();
    println!("{duplicates} duplicate requests (at-least-once)");
    let unstable: Vec<_> = seen.iter().filter(|(_, ids)| ids.iter().any(|id| *id != ids[0])).collect();
    assert!(unstable.is_empty(), "a resend changed webhook-id: {unstable:?}");
}

#[test]
fn worker_killed_mid_batch_loses_nothing() {
    survives(|cluster| {
        let killed = cluster.worker_pids();
        assert!(!killed.is_empty(), "no worker to kill");
        for &pid in &killed {
            // SAFETY: kill(2) on a pid we just read from pg_stat_activity.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        }
        // The postmaster resets everything, then starts a new worker.
        let restarted = wait_until(Duration::from_secs(30), || {
            cluster.try_worker_pids().is_ok_and(|pids| !pids.is_empty() && pids.iter().all(|p| !killed.contains(p)))
        });
        assert!(restarted, "no new worker after kill -9 of {killed:?}");
    });
}

#[test]
fn immediate_shutdown_mid_batch_loses_nothing() {
    survives(Cluster::restart_immediate);
}
