//! The worker is a good citizen of the server in every state it can be in:
//! cluster-wide operations and shutdown complete promptly, an idle worker
//! sleeps, and a worker ended by pg_terminate_backend comes back.

use std::time::{Duration, Instant};

use postgres::Client;
use serde_json::json;
use webhook_outbox_it::outbox::{self, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster, Receiver, Reply};

/// What a cluster-wide operation may take at most, whatever the worker does.
const PROMPT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum State {
    WaitingForExtension,
    Idle,
    Delivering,
    PausedOff,
    PausedShadow,
}

/// Puts the worker of a fresh cluster in `state`; returns what keeps it there.
fn enter(cluster: &Cluster, db: &mut Client, state: State) -> Option<Receiver> {
    match state {
        State::WaitingForExtension => {
            db.batch_execute("DROP EXTENSION webhook_outbox").expect("drop");
            None
        }
        State::Idle => {
            let rx = Receiver::http(vec![Reply::ok()]);
            let ep = outbox::create_endpoint(db, &rx.url(), &EndpointOpts::default());
            let id = outbox::enqueue(db, ep.id, &json!({}));
            outbox::wait_for_status(db, id, "sent", Duration::from_secs(10));
            Some(rx)
        }
        State::Delivering => {
            // Requests that take far longer than a shutdown may (http_timeout is 30 s here).
            let rx = Receiver::http(vec![Reply::ok().after(Duration::from_secs(20))]);
            let ep = outbox::create_endpoint(db, &rx.url(), &EndpointOpts::default());
            outbox::enqueue_seq(db, ep.id, 5000);
            rx.wait_for_requests(10, Duration::from_secs(10));
            Some(rx)
        }
        State::PausedOff | State::PausedShadow => {
            let mode = if matches!(state, State::PausedOff) { "off" } else { "shadow" };
            let rx = Receiver::http(vec![Reply::ok()]);
            let ep = outbox::create_endpoint(db, &rx.url(), &EndpointOpts::default());
            cluster.set_conf("webhook_outbox.mode", mode);
            db.execute(
                "INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, max_attempts)
                 SELECT $1, 'e' || i, 't', '{}', 5 FROM generate_series(1, 100) i",
                &[&ep.id],
            )
            .expect("pending rows");
            std::thread::sleep(Duration::from_secs(2));
            Some(rx)
        }
    }
}

fn timed(what: &str, f: impl FnOnce()) {
    let started = Instant::now();
    f();
    let took = started.elapsed();
    println!("{what}: {took:?}");
    assert!(took < PROMPT, "{what} took {took:?}");
}

#[test]
fn cluster_operations_complete_promptly_in_every_state() {
    // Each state once with the extension step before the shutdown, and the
    // delivering state also with the shutdown while requests still run (the
    // extension step would have ended them).
    let runs = [
        (State::WaitingForExtension, true),
        (State::Idle, true),
        (State::Delivering, true),
        (State::Delivering, false),
        (State::PausedOff, true),
        (State::PausedShadow, true),
    ];
    for (state, extension_step) in runs {
        println!("--- {state:?}");
        let cluster =
            Cluster::start(&[("webhook_outbox.poll_interval", "60s"), ("webhook_outbox.http_timeout", "30s")]);
        let mut db = cluster.client();
        let _keep = enter(&cluster, &mut db, state);
        assert_eq!(cluster.worker_pids().len(), 1, "{state:?}: the worker runs");
        db.batch_execute("CREATE DATABASE other").expect("createdb");
        // DROP DATABASE waits until every backend has absorbed a signal barrier.
        timed(&format!("{state:?}: DROP DATABASE other"), || {
            db.batch_execute("DROP DATABASE other").expect("dropdb");
        });
        timed(&format!("{state:?}: ALTER SYSTEM + reload"), || {
            cluster.set_conf("webhook_outbox.batch_size", "400");
        });
        if extension_step {
            timed(&format!("{state:?}: DROP/CREATE EXTENSION"), || {
                let sql = match state {
                    State::WaitingForExtension => "CREATE EXTENSION webhook_outbox",
                    _ => "DROP EXTENSION webhook_outbox",
                };
                db.batch_execute(sql).expect(sql);
            });
        }
        drop(db);
        let took = cluster.stop_fast();
        println!("{state:?}: shutdown {took:?}");
        assert!(took < PROMPT, "{state:?}: shutdown took {took:?}");
    }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name, which ends at the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn idle_cpu(cluster: &Cluster, state: &str) -> f64 {
    let pid = cluster.worker_pids()[0];
    // Let the state settle (a pass just after a commit is not idleness).
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_seconds(pid) - before;
    println!("{state}: worker used {used:.3} s of CPU in 10 idle seconds");
    used
}

/// The default poll interval (1 s): the worker wakes once a second when
/// idle, and each wake-up is a short transaction.
const IDLE_BUDGET_S: f64 = 0.3;

#[test]
fn an_idle_worker_sleeps() {
    let cluster = Cluster::start(&[]);
    let mut db = cluster.client();
    assert!(idle_cpu(&cluster, "fresh install, no endpoint") < IDLE_BUDGET_S);

    let rx = Receiver::http(vec![Reply::ok()]);
    let ep = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    let ids = outbox::enqueue_seq(&mut db, ep.id, 10);
    for id in ids {
        outbox::wait_for_status(&mut db, id, "sent", Duration::from_secs(10));
    }
    assert!(idle_cpu(&cluster, "nothing queued") < IDLE_BUDGET_S);

    db.batch_execute(&format!(
        "SELECT webhook_outbox.create_endpoint('{}' || i) FROM generate_series(1, 1000) i",
        rx.url()
    ))
    .expect("many endpoints");
    assert!(idle_cpu(&cluster, "1001 endpoints, nothing queued") < IDLE_BUDGET_S);

    db.batch_execute("DROP EXTENSION webhook_outbox").expect("drop");
    assert!(idle_cpu(&cluster, "waiting for the extension") < IDLE_BUDGET_S);
}

#[test]
fn a_terminated_worker_comes_back() {
    let cluster = Cluster::start(&[]);
    let mut db = cluster.client();
    let old = cluster.worker_pids();
    assert_eq!(old.len(), 1);
    let ended: bool = db.query_one("SELECT pg_terminate_backend($1)", &[&old[0]]).expect("pg_terminate_backend").get(0);
    assert!(ended);
    let back =
        wait_until(Duration::from_secs(10), || cluster.try_worker_pids().is_ok_and(|p| p.len() == 1 && p[0] != old[0]));
    assert!(back, "no worker 10 s after pg_terminate_backend");
    let running: bool = db
        .query_one("SELECT running FROM webhook_outbox.v_worker_status WHERE worker = 0", &[])
        .expect("v_worker_status")
        .get(0);
    assert!(running);
    // And it delivers.
    let rx = Receiver::http(vec![Reply::ok()]);
    let ep = outbox::create_endpoint(&mut db, &rx.url(), &EndpointOpts::default());
    let id = outbox::enqueue(&mut db, ep.id, &json!({}));
    outbox::wait_for_status(&mut db, id, "sent", Duration::from_secs(10));
}
