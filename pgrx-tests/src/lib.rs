//! Harness for the `webhook_outbox` integration tests: a real PostgreSQL
//! cluster with the library preloaded ([`Cluster`]), real HTTP(S) receivers on
//! loopback ([`Receiver`], [`TestCa`]) and helpers over the outbox's SQL API
//! ([`outbox`]). Nothing here is mocked; nothing leaves 127.0.0.0/8.
//!
//! Needs PostgreSQL 15 in /usr/lib/postgresql/15 with the extension installed
//! (`cargo pgrx install`), and root (clusters then run as `postgres`) or the
//! `postgres` user. Run with `cargo test --release -- --nocapture` to see the
//! measured figures.

mod cluster;
mod nginx;
pub mod outbox;
mod receiver;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use cluster::{Cluster, BACKOFF_BASE, CIRCUIT_OPEN, HTTP_TIMEOUT, LEASE};
pub use nginx::{Logged, Nginx};
pub use receiver::{Receiver, Reply, Request};
pub use tls::{ServerCert, TestCa};

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wo-it-{}-{n}-{tag}", std::process::id()));
        // A leftover from an earlier run that reused this pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
