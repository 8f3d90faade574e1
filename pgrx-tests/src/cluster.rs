//! A throwaway PostgreSQL 15 cluster with `webhook_outbox` preloaded.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::{wait_until, TempDir};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Lines of the server log shown when a test fails.
const LOG_TAIL: usize = 300;

/// Settings every test cluster starts with: loopback allowed (tests only ever
/// talk to 127.0.0.0/8), plain HTTP allowed, no default rate limit, and short
/// timers so retries, leases and the circuit breaker play out in seconds.
const BASE_CONF: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("shared_preload_libraries", "webhook_outbox"),
    // Only process crashes are simulated, and the OS page cache survives those.
    ("fsync", "off"),
    ("webhook_outbox.database", "postgres"),
    ("webhook_outbox.allowed_cidrs", "127.0.0.0/8,::1/128"),
    ("webhook_outbox.allow_http", "on"),
    ("webhook_outbox.rate_limit_rps", "0"),
    ("webhook_outbox.http_timeout", "1s"),
    ("webhook_outbox.connect_timeout", "1s"),
    // The original worker's doubling, from 200 ms: five attempts.
    ("webhook_outbox.retry_schedule", "200ms,400ms,800ms,1600ms"),
    ("webhook_outbox.circuit_open_seconds", "2"),
    ("webhook_outbox.lease", "3s"),
    ("webhook_outbox.poll_interval", "1s"),
];

/// What `BASE_CONF` sets, for tests that reason about the timers (`BACKOFF_BASE`:
/// the first step of its retry schedule, each later one twice the last).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(1);
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
pub const CIRCUIT_OPEN: Duration = Duration::from_secs(2);
pub const LEASE: Duration = Duration::from_secs(3);

pub struct Cluster {
    dir: TempDir,
    port: u16,
}

impl Cluster {
    /// initdb, configure, start and `CREATE EXTENSION webhook_outbox`.
    /// `extra_conf` is written after `BASE_CONF`, so it overrides it.
    pub fn start(extra_conf: &[(&str, &str)]) -> Cluster {
        let dir = TempDir::new("cluster");
        if is_root() {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            run(Command::new("chown").arg("postgres:postgres").arg(dir.path()));
        }
        let mut cluster = Cluster { dir, port: 0 };
        run(cluster
            .pg("initdb")
            .args(["--no-sync", "--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--locale=C", "-D"])
            .arg(cluster.data()));

        // A port can be taken between probing and binding: then try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.port = free_port();
            let socket_dir = cluster.data().display().to_string();
            let port = cluster.port.to_string();
            let settings = [("port", port.as_str()), ("unix_socket_directories", &socket_dir)];
            let conf: String = settings
                .iter()
                .chain(BASE_CONF)
                .chain(extra_conf)
                .map(|(name, value)| format!("{name} = {}\n", quote(value)))
                .collect();
            // Read after postgresql.conf, and kept by later ALTER SYSTEMs.
            fs::write(cluster.data().join("postgresql.auto.conf"), conf).expect("write conf");
            if cluster.pg_ctl_start().status.success() {
                cluster
                    .client()
                    .batch_execute("CREATE EXTENSION webhook_outbox")
                    .unwrap_or_else(|e| panic!("CREATE EXTENSION webhook_outbox: {e}"));
                return cluster;
            }
            let port_taken = cluster.log().contains("Address already in use");
            assert!(port_taken && attempt < 3, "the cluster did not start");
        }
    }

    pub fn try_client(&self) -> Result<Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(NoTls)
    }

    pub fn client(&self) -> Client {
        self.try_client().unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// A connection as `user` to `dbname`.
    pub fn connect(&self, user: &str, dbname: &str) -> Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5))
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect as {user} to {dbname}: {e}"))
    }

    /// Runs a client program of PostgreSQL 15 (`pg_dump`, `psql`, …) against
    /// this cluster as `postgres`, with `args`; panics unless it succeeds.
    pub fn tool(&self, program: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let out = self
            .pg(program)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The directory the cluster's files live in (readable by `postgres`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `pg_ctl stop -m fast`: how long the shutdown took (it must finish).
    pub fn stop_fast(&self) -> Duration {
        let started = std::time::Instant::now();
        let out = self.pg("pg_ctl").args(["stop", "-w", "-t", "60", "-m", "fast", "-D"]).arg(self.data()).output();
        assert!(out.is_ok_and(|o| o.status.success()), "pg_ctl stop -m fast failed");
        started.elapsed()
    }

    /// A fresh connection once the server accepts queries again after a crash
    /// restart (the postmaster kills every backend, ours included).
    pub fn reconnect(&self, timeout: Duration) -> Client {
        let mut client = None;
        let ready = wait_until(timeout, || {
            client = self.try_client().ok().and_then(|mut c| c.simple_query("SELECT 1").ok().map(|_| c));
            client.is_some()
        });
        assert!(ready, "server not back after {timeout:?}");
        client.expect("ready implies a client")
    }

    /// `ALTER SYSTEM` + `pg_reload_conf()`, returning once the postmaster has
    /// reloaded (new sessions see the value; the worker got its SIGHUP).
    pub fn set_conf(&self, name: &str, value: &str) {
        let load_time = || -> String {
            let row = self.client().query_one("SELECT pg_conf_load_time()::text", &[]);
            row.expect("pg_conf_load_time").get(0)
        };
        let before = load_time();
        let mut db = self.client();
        // Two statements: ALTER SYSTEM refuses to run in the implicit transaction of a batch.
        db.batch_execute(&format!("ALTER SYSTEM SET {name} = {}", quote(value)))
            .and_then(|_| db.batch_execute("SELECT pg_reload_conf()"))
            .unwrap_or_else(|e| panic!("ALTER SYSTEM SET {name} = {value}: {e:?}"));
        assert!(wait_until(Duration::from_secs(5), || load_time() != before), "no reload after setting {name}");
    }

    /// Pids of the background workers (`backend_type` starts with `webhook_outbox`).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.try_worker_pids().expect("read pg_stat_activity")
    }

    /// As [`Cluster::worker_pids`], for a server that may be restarting.
    pub fn try_worker_pids(&self) -> Result<Vec<i32>, postgres::Error> {
        let rows = self
            .try_client()?
            .query("SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'webhook_outbox%'", &[])?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// `pg_ctl stop -m immediate` (no shutdown checkpoint: crash recovery on
    /// the next start) and start again on the same port.
    pub fn restart_immediate(&self) {
        self.pg_ctl_stop();
        let out = self.pg_ctl_start();
        assert!(out.status.success(), "restart failed");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no server log: {e})"))
    }

    fn pg(&self, program: &str) -> Command {
        let program = Path::new(PG_BIN).join(program);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The postgres user may not be able to read the caller's directory.
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn pg_ctl_start(&self) -> Output {
        self.pg("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .output()
            .expect("run pg_ctl start")
    }

    fn pg_ctl_stop(&self) {
        let _ = self.pg("pg_ctl").args(["stop", "-w", "-m", "immediate", "-D"]).arg(self.data()).output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.pg_ctl_stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            eprintln!("----- server log ({}), last {LOG_TAIL} lines -----\n{tail}", self.log_path().display());
        }
    }
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("probe a free port").port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
