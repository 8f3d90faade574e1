//! `GET /metrics` on `webhook_outbox.metrics_listen`, served by worker 0.
//!
//! The listener thread never touches Postgres: it asks the worker's main
//! thread for a fresh rendering (flag + wake-up) and waits for it, up to a
//! deadline, then serves the newest text it has.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a scrape waits for the main thread before serving older text.
const FRESH_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Board {
    text: Mutex<(u64, String)>,
    updated: Condvar,
    wanted: AtomicBool,
}

pub struct Scrape {
    board: Arc<Board>,
    pub address: String,
}

impl Scrape {
    /// Listen on `address` (host:port); `wake` rouses the main thread.
    pub fn start(address: &str, wake: impl Fn() + Send + 'static) -> std::io::Result<Scrape> {
        let listener = TcpListener::bind(address)?;
        let board = Arc::new(Board::default());
        let shared = board.clone();
        std::thread::Builder::new()
            .name("webhook_outbox-metrics".into())
            .spawn(move || {
                super::pool::block_signals();
                for stream in listener.incoming().flatten() {
                    let _ = serve(stream, &shared, &wake);
                }
            })?;
        Ok(Scrape {
            board,
            address: address.to_owned(),
        })
    }

    /// Whether a scrape is waiting for a rendering.
    pub fn wanted(&self) -> bool {
        self.board.wanted.swap(false, Ordering::AcqRel)
    }

    pub fn publish(&self, text: String) {
        let mut slot = self.board.text.lock().unwrap_or_else(|p| p.into_inner());
        *slot = (slot.0 + 1, text);
        self.board.updated.notify_all();
    }
}

fn serve(stream: TcpStream, board: &Board, wake: &impl Fn()) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; the request has no body we care about.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    if !request_line.starts_with("GET ") || !(path == "/metrics" || path.starts_with("/metrics?")) {
        let body = "not found: try GET /metrics\n";
        return write!(
            stream,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let seen = board.text.lock().unwrap_or_else(|p| p.into_inner()).0;
    board.wanted.store(true, Ordering::Release);
    wake();
    let deadline = Instant::now() + FRESH_WAIT;
    let mut slot = board.text.lock().unwrap_or_else(|p| p.into_inner());
    while slot.0 == seen {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        slot = board
            .updated
            .wait_timeout(slot, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    let body = slot.1.clone();
    drop(slot);
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
