//! The Prometheus scrape endpoint served by worker 0 on
//! `webhook_outbox.metrics_listen`, read with a plain HTTP client, and the
//! same text as `SELECT webhook_outbox.metrics()`. Its listener lives inside
//! the worker process: a misbehaving client must cost it neither time nor
//! memory, and changing the setting must really move it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use webhook_outbox_it::outbox::{self, EndpointOpts};
use webhook_outbox_it::{wait_until, Cluster};

/// `GET path` over a fresh connection; (status line, body).
fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn answers(port: u16) -> bool {
    get(port, "/metrics").is_ok_and(|(status, _)| status == "HTTP/1.1 200 OK")
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
}

/// Private anonymous memory of a process (heap, thread stacks; not shared buffers), in KiB.
fn rss_anon_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<worker>/status");
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/<pid>/status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("RssAnon in KiB")
}

fn postmaster_start(cluster: &Cluster) -> String {
    cluster.client().query_one("SELECT pg_postmaster_start_time()::text", &[]).expect("start time").get(0)
}

#[test]
fn metrics_are_served_over_http_and_follow_the_queue() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Shadow mode: rows stay where they are, so the numbers are known.
    let cluster = Cluster::start(&[("webhook_outbox.metrics_listen", &listen), ("webhook_outbox.mode", "shadow")]);
    let mut db = cluster.client();
    let endpoint = outbox::create_endpoint(&mut db, "http://127.0.0.1:9/unused", &EndpointOpts::default());
    for i in 0..3 {
        outbox::enqueue(&mut db, endpoint.id, &json!({ "i": i }));
    }

    assert!(wait_until(Duration::from_secs(10), || get(port, "/metrics").is_ok()), "listener on {listen}");
    let (status, body) = get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for name in [
        "webhook_deliveries_total",
        "webhook_delivery_duration_seconds",
        "webhook_queue_depth",
        "webhook_oldest_pending_age_seconds",
        "webhook_circuit_open",
        "webhook_worker_up",
    ] {
        assert!(body.contains(&format!("# TYPE {name}")), "{name} missing from:\n{body}");
    }
    assert!(
        body.lines().any(|l| l.starts_with("webhook_queue_depth{status=\"shadow\"} 3")),
        "three shadow rows in:\n{body}"
    );
    assert!(body.lines().any(|l| l.starts_with("webhook_worker_up{worker=\"0\"} 1")), "worker up in:\n{body}");

    // A fresh rendering for a scrape a second after the last one (within the
    // second, clients get the last text: they cannot make the worker render
    // more often).
    outbox::enqueue(&mut db, endpoint.id, &json!({ "i": 3 }));
    std::thread::sleep(Duration::from_millis(1100));
    let (_, body) = get(port, "/metrics").expect("second scrape");
    assert!(body.lines().any(|l| l.starts_with("webhook_queue_depth{status=\"shadow\"} 4")), "four now:\n{body}");

    let (status, _) = get(port, "/other").expect("GET /other");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
}

/// A client sending 64 MB without a newline and one sending a byte every two
/// seconds: both are cut off, and meanwhile every scrape answers at once, the
/// worker's memory stays flat and nothing restarts.
#[test]
fn hostile_clients_delay_no_scrape_and_cost_no_memory() {
    const ATTACK: Duration = Duration::from_secs(10);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cluster = Cluster::start(&[("webhook_outbox.metrics_listen", &listen)]);
    assert!(wait_until(Duration::from_secs(10), || answers(port)), "listener on {listen}");
    // Warm up the rendering path (caches, allocator) before the baseline.
    for _ in 0..3 {
        assert!(answers(port));
    }
    let pids = cluster.worker_pids();
    let [worker] = pids[..] else { panic!("one worker expected: {pids:?}") };
    let started = postmaster_start(&cluster);
    let before = rss_anon_kib(worker);

    let done = Arc::new(AtomicBool::new(false));
    let streamer = {
        let done = done.clone();
        thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect streamer");
            stream.set_write_timeout(Some(ATTACK)).expect("write timeout");
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < 64 << 20 {
                match stream.write(&chunk) {
                    Ok(n) => sent += n,
                    // The server closing on us (EPIPE, ECONNRESET) is the point.
                    Err(_) => return sent,
                }
            }
            // All of it was swallowed: hold the connection (and what the server keeps of it).
            while !done.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
            }
            sent
        })
    };
    let trickler = thread::spawn(move || {
        let start = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect trickler");
        // Also the pace: one byte, then up to two seconds waiting for the server to hang up.
        stream.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
        while start.elapsed() < ATTACK {
            if stream.write_all(b"G").is_err() {
                return start.elapsed();
            }
            match stream.read(&mut [0; 512]) {
                Ok(0) => return start.elapsed(),
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return start.elapsed(),
                _ => {}
            }
        }
        start.elapsed()
    });

    let attack = Instant::now();
    let mut peak = before;
    let mut scrapes = Vec::new();
    thread::sleep(Duration::from_millis(300));
    while attack.elapsed() < ATTACK - Duration::from_secs(1) {
        let t = Instant::now();
        let ok = answers(port);
        scrapes.push((ok, t.elapsed()));
        peak = peak.max(rss_anon_kib(worker));
        thread::sleep(Duration::from_millis(500));
    }
    done.store(true, Ordering::Relaxed);
    let sent = streamer.join().expect("streamer");
    let cut_after = trickler.join().expect("trickler");
    println!(
        "scrapes under attack: {scrapes:?}; worker RssAnon {before} KiB, peak {peak} KiB; \
         streamer cut after {sent} bytes; trickler cut after {cut_after:?}"
    );

    assert!(scrapes.len() >= 5, "too few scrapes: {scrapes:?}");
    assert!(scrapes.iter().all(|&(ok, took)| ok && took < Duration::from_secs(1)), "slow or failed: {scrapes:?}");
    assert!(peak.saturating_sub(before) < 16 * 1024, "worker RssAnon grew from {before} to {peak} KiB");
    assert!(sent < 64 << 20, "the server swallowed all 64 MB of one request line");
    assert!(cut_after < Duration::from_secs(8), "a byte every two seconds kept a connection {cut_after:?}");
    assert_eq!(cluster.worker_pids(), pids, "the worker was restarted");
    assert_eq!(postmaster_start(&cluster), started, "the postmaster restarted");
    assert!(answers(port));
}

/// A new `metrics_listen` closes the old socket (the port is free again at
/// once), and an empty one closes it altogether.
#[test]
fn changing_metrics_listen_moves_the_listener() {
    // Both bound at once, so they differ.
    let probes = [TcpListener::bind("127.0.0.1:0"), TcpListener::bind("127.0.0.1:0")];
    let [a, b] = probes.map(|l| l.and_then(|l| l.local_addr()).expect("free port").port());
    let cluster = Cluster::start(&[("webhook_outbox.metrics_listen", &format!("127.0.0.1:{a}"))]);
    assert!(wait_until(Duration::from_secs(10), || answers(a)), "listener on port {a}");

    cluster.set_conf("webhook_outbox.metrics_listen", &format!("127.0.0.1:{b}"));
    assert!(wait_until(Duration::from_secs(10), || answers(b)), "listener moved to port {b}");
    // The old socket is closed before the new one is bound.
    assert!(refused(a), "port {a} still accepts connections");
    drop(TcpListener::bind(("127.0.0.1", a)).unwrap_or_else(|e| panic!("port {a} not released: {e}")));

    cluster.set_conf("webhook_outbox.metrics_listen", "");
    assert!(wait_until(Duration::from_secs(10), || refused(b)), "port {b} still accepts connections");
    drop(TcpListener::bind(("127.0.0.1", b)).unwrap_or_else(|e| panic!("port {b} not released: {e}")));

    // Back to a port used before: bound anew.
    cluster.set_conf("webhook_outbox.metrics_listen", &format!("127.0.0.1:{a}"));
    assert!(wait_until(Duration::from_secs(10), || answers(a)), "listener back on port {a}");
}
