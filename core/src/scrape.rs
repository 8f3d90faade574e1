//! `GET /metrics` on `webhook_outbox.metrics_listen`, served by worker 0.
//!
//! These threads live inside a Postgres backend, where an abort or an
//! allocation failure restarts the whole cluster, so they never call Postgres
//! and hold only bounded buffers. They ask the main thread for a fresh
//! rendering (flag + wake-up) and wait for it, up to a deadline, then serve the
//! newest text they have.
//!
//! One thread accepts; each connection gets its own thread (at most
//! `MAX_CONNECTIONS`, past that new ones are closed at once) and a total
//! deadline, so a stuck client cannot delay anyone else's scrape.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a scrape waits for the main thread before serving older text.
const FRESH_WAIT: Duration = Duration::from_secs(2);
/// From accept to the last byte of the answer, whatever the client does.
const DEADLINE: Duration = Duration::from_secs(5);
/// Request line and headers; Prometheus sends a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Live connections (process-wide, so an old listener's stragglers count too).
const MAX_CONNECTIONS: usize = 16;
/// A scrape within this long of the last rendering gets that text again:
/// clients cannot make the worker render (a transaction) more often.
const MIN_RENDER_INTERVAL: Duration = Duration::from_secs(1);
/// How often the accept loop looks at its stop flag if no shutdown wakes it.
const POLL: Duration = Duration::from_millis(200);

static LIVE: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Board {
    text: Mutex<(u64, Arc<str>)>,
    updated: Condvar,
    wanted: AtomicBool,
}

pub struct Scrape {
    board: Arc<Board>,
    /// Shared with the accept thread so its fd stays ours until that thread is joined.
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    /// When the main thread last published a rendering.
    rendered_at: std::cell::Cell<Option<Instant>>,
    pub address: String,
}

impl Scrape {
    /// Listen on `address` (host:port); `wake` rouses the main thread.
    pub fn start(
        address: &str,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Scrape> {
        let listener = Arc::new(TcpListener::bind(address)?);
        // Nonblocking: a connection gone between poll and accept must not block the loop.
        listener.set_nonblocking(true)?;
        let board = Arc::new(Board::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (listener, board, stop) = (listener.clone(), board.clone(), stop.clone());
            let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
            std::thread::Builder::new()
                .name("webhook_outbox-metrics".into())
                .spawn(move || {
                    crate::dispatch::block_signals();
                    accept_loop(&listener, &board, &stop, &wake);
                })?
        };
        Ok(Scrape {
            board,
            listener,
            stop,
            acceptor: Some(acceptor),
            rendered_at: std::cell::Cell::new(None),
            address: address.to_owned(),
        })
    }

    /// Whether a scrape is waiting for a new rendering. One published less
    /// than `MIN_RENDER_INTERVAL` ago is served again instead.
    pub fn wanted(&self) -> bool {
        if !self.board.wanted.swap(false, Ordering::AcqRel) {
            return false;
        }
        if self
            .rendered_at
            .get()
            .is_some_and(|at| at.elapsed() < MIN_RENDER_INTERVAL)
        {
            let mut slot = self.board.text.lock().unwrap_or_else(|p| p.into_inner());
            slot.0 += 1;
            self.board.updated.notify_all();
            return false;
        }
        true
    }

    pub fn publish(&self, text: String) {
        let mut slot = self.board.text.lock().unwrap_or_else(|p| p.into_inner());
        *slot = (slot.0 + 1, text.into());
        self.board.updated.notify_all();
        self.rendered_at.set(Some(Instant::now()));
    }
}

#[cfg(test)]
impl Scrape {
    /// The address bound (the port that `127.0.0.1:0` got).
    fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("local address")
    }
}

impl Drop for Scrape {
    /// Closes the listening socket before returning, so the port can be bound
    /// again at once. Connections already accepted finish on their own.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept thread's poll now rather than within `POLL`; the
        // fd is still open (we hold the listener), so this cannot hit another socket.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    board: &Arc<Board>,
    stop: &AtomicBool,
    wake: &Arc<dyn Fn() + Send + Sync>,
) {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let ready = unsafe { libc::poll(&mut fd, 1, POLL.as_millis() as libc::c_int) };
        if stop.load(Ordering::Acquire) {
            return;
        }
        // A failed poll or accept (out of memory or fds) would fail again at
        // once: don't spin while it lasts.
        if ready < 0 {
            std::thread::sleep(POLL);
            continue;
        }
        if ready == 0 {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        let Some(slot) = Slot::take() else {
            continue; // over the cap: dropping the stream closes it
        };
        let (board, wake) = (board.clone(), wake.clone());
        // On spawn failure the closure, with the stream and the slot, is dropped.
        let _ = std::thread::Builder::new()
            .name("webhook_outbox-metrics-conn".into())
            .spawn(move || {
                crate::dispatch::block_signals();
                let _slot = slot;
                let _ = serve(stream, &board, &*wake);
            });
    }
}

/// One of `MAX_CONNECTIONS`, given back on drop.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        LIVE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CONNECTIONS).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve(mut stream: TcpStream, board: &Board, wake: &dyn Fn()) -> std::io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    // Accepted sockets inherit O_NONBLOCK on some systems.
    stream.set_nonblocking(false)?;
    // Head and body are two writes: don't let Nagle hold the second one back.
    stream.set_nodelay(true)?;
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    let head = loop {
        if len == buf.len() {
            let body = "request head too large\n";
            return respond(
                &mut stream,
                deadline,
                "431 Request Header Fields Too Large",
                "text/plain",
                body,
            );
        }
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break &buf[..len]; // the client stopped sending: take what came
        }
        // Only the new bytes (and three before them) can complete the blank line.
        let from = len.saturating_sub(3);
        len += n;
        if let Some(end) = head_end(&buf[from..len]) {
            break &buf[..from + end];
        }
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line
        .strip_suffix(b"\r")
        .unwrap_or(line)
        .split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    if method != b"GET" || !(path == b"/metrics" || path.starts_with(b"/metrics?")) {
        let body = "not found: try GET /metrics\n";
        return respond(&mut stream, deadline, "404 Not Found", "text/plain", body);
    }
    let body = fresh_text(board, wake, deadline.min(Instant::now() + FRESH_WAIT));
    respond(
        &mut stream,
        deadline,
        "200 OK",
        "text/plain; version=0.0.4",
        &body,
    )
}

/// Where the request head ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    crlf.into_iter().chain(lf).min()
}

/// Ask the main thread for a rendering and wait for it until `until`; the
/// newest text either way.
fn fresh_text(board: &Board, wake: &dyn Fn(), until: Instant) -> Arc<str> {
    let seen = board.text.lock().unwrap_or_else(|p| p.into_inner()).0;
    board.wanted.store(true, Ordering::Release);
    wake();
    let mut slot = board.text.lock().unwrap_or_else(|p| p.into_inner());
    while slot.0 == seen {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        slot = board
            .updated
            .wait_timeout(slot, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    slot.1.clone()
}

fn respond(
    stream: &mut TcpStream,
    deadline: Instant,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    write_by(stream, head.as_bytes(), deadline)?;
    write_by(stream, body.as_bytes(), deadline)
}

/// `write_all` that gives up at `deadline` (a write timeout bounds each call only).
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.set_write_timeout(Some(left(deadline)?))?;
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::mpsc;

    /// A listener on a free loopback port; its wake-ups of the main thread
    /// arrive on the receiver.
    fn start() -> (Scrape, mpsc::Receiver<()>) {
        let (tx, wakes) = mpsc::channel();
        let scrape = Scrape::start("127.0.0.1:0", move || {
            let _ = tx.send(());
        })
        .expect("listen on 127.0.0.1");
        (scrape, wakes)
    }

    /// Sends `request` and reads the response to its end (the server closes).
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream.write_all(request).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    }

    /// `exchange` on a thread of its own, while the test plays the main thread.
    fn exchange_in_background(addr: SocketAddr, request: &'static [u8]) -> JoinHandle<String> {
        std::thread::spawn(move || exchange(addr, request))
    }

    #[test]
    fn get_metrics_serves_what_the_main_thread_publishes() {
        let (scrape, wakes) = start();
        let addr = scrape.local_addr();
        let client = exchange_in_background(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        wakes
            .recv_timeout(Duration::from_secs(5))
            .expect("the scrape wakes the main thread");
        assert!(scrape.wanted(), "a rendering is wanted");
        scrape.publish("webhook_up 1\n".into());
        let response = client.join().expect("client thread");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("\r\ncontent-type: text/plain; version=0.0.4\r\n"),
            "{response}"
        );
        assert!(
            response.contains("\r\ncontent-length: 13\r\n"),
            "{response}"
        );
        assert!(response.ends_with("\r\n\r\nwebhook_up 1\n"), "{response}");

        // Asked again at once: the same text, without a new rendering.
        let client = exchange_in_background(addr, b"GET /metrics?name[]=x HTTP/1.1\n\n");
        wakes
            .recv_timeout(Duration::from_secs(5))
            .expect("the scrape wakes the main thread");
        assert!(!scrape.wanted(), "rendered less than a second ago");
        let response = client.join().expect("client thread");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nwebhook_up 1\n"), "{response}");
    }

    #[test]
    fn other_paths_and_methods_are_not_found() {
        let (scrape, wakes) = start();
        let requests: [&[u8]; 3] = [
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET /metricsx HTTP/1.1\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\n\r\n",
        ];
        for request in requests {
            let response = exchange(scrape.local_addr(), request);
            assert!(
                response.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{response}"
            );
            assert!(
                response.ends_with("\r\n\r\nnot found: try GET /metrics\n"),
                "{response}"
            );
        }
        assert!(wakes.try_recv().is_err(), "no rendering asked for");
        assert!(!scrape.wanted());
    }

    #[test]
    fn an_oversized_request_head_is_refused() {
        let (scrape, wakes) = start();
        // Exactly the buffer, with no blank line: nothing is left unread.
        let mut request = b"GET /metrics HTTP/1.1\r\nx-filler: ".to_vec();
        request.resize(MAX_REQUEST, b'a');
        let response = exchange(scrape.local_addr(), &request);
        assert!(
            response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{response}"
        );
        assert!(
            response.ends_with("\r\n\r\nrequest head too large\n"),
            "{response}"
        );
        assert!(wakes.try_recv().is_err(), "no rendering asked for");
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: x\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn dropping_frees_the_port_at_once() {
        let (scrape, _wakes) = start();
        let addr = scrape.local_addr();
        drop(scrape);
        let again = Scrape::start(&addr.to_string(), || {}).expect("the same port again");
        assert_eq!(again.local_addr(), addr);
    }
}
