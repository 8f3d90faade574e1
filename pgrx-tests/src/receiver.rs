//! A real HTTP/1.1 server on 127.0.0.1 (plain or TLS) that records every
//! request and answers from a script: what a webhook consumer looks like to
//! the worker, keep-alive included.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::{wait_until, ServerCert};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had been read.
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id").expect("request without webhook-id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is not JSON")
    }

    /// Checks `webhook-id`/`webhook-timestamp`/`webhook-signature` with the
    /// official Standard Webhooks library, as a receiver would.
    pub fn verify_signature(&self, secret: &str) -> Result<(), standardwebhooks::WebhookError> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (name.parse::<http::HeaderName>(), value.parse()) {
                headers.append(name, value);
            }
        }
        standardwebhooks::Webhook::new(secret)?.verify(&self.body, &headers)
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), delay: Duration::ZERO }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// Never answers in time: longer than any client timeout a test sets.
    pub fn hang() -> Reply {
        Reply::ok().after(Duration::from_secs(30))
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answer only after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// Replies are used in order; the last one repeats.
struct Script {
    replies: Vec<Reply>,
    next: usize,
}

struct State {
    script: Mutex<Script>,
    requests: Mutex<Vec<Request>>,
    connections: AtomicUsize,
    stopped: AtomicBool,
}

impl State {
    fn record(&self, request: Request) -> Reply {
        self.requests.lock().unwrap().push(request);
        let mut script = self.script.lock().unwrap();
        let reply = script.replies[script.next.min(script.replies.len() - 1)].clone();
        script.next += 1;
        reply
    }
}

pub struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    /// The host its URL names: the certificate's name for HTTPS.
    host: &'static str,
    state: Arc<State>,
}

impl Receiver {
    pub fn http(replies: Vec<Reply>) -> Receiver {
        Receiver::start(replies, None)
    }

    /// TLS with `cert`; its URL names `localhost`, which the certificates
    /// from [`crate::TestCa`] and [`ServerCert::self_signed`] are issued for.
    pub fn https(replies: Vec<Reply>, cert: ServerCert) -> Receiver {
        let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(cert.chain, cert.key))
            .expect("TLS server config");
        Receiver::start(replies, Some(Arc::new(config)))
    }

    fn start(replies: Vec<Reply>, tls: Option<Arc<ServerConfig>>) -> Receiver {
        assert!(!replies.is_empty(), "a receiver needs at least one reply");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let state = Arc::new(State {
            script: Mutex::new(Script { replies, next: 0 }),
            requests: Mutex::default(),
            connections: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        });
        let (scheme, host) = if tls.is_some() { ("https", "localhost") } else { ("http", "127.0.0.1") };
        let receiver = Receiver { addr: listener.local_addr().expect("local addr"), scheme, host, state };
        let state = Arc::clone(&receiver.state);
        thread::spawn(move || accept_loop(listener, state, tls));
        receiver
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        self.url_at(self.host)
    }

    /// This receiver's URL spelled with another host (which must reach it).
    pub fn url_at(&self, host: &str) -> String {
        format!("{}://{host}:{}/hook", self.scheme, self.port())
    }

    /// Replaces the script; the next request gets the first new reply.
    pub fn set_replies(&self, replies: Vec<Reply>) {
        assert!(!replies.is_empty(), "a receiver needs at least one reply");
        *self.state.script.lock().unwrap() = Script { replies, next: 0 };
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// TCP connections accepted, whether or not a request followed.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let arrived = wait_until(timeout, || self.request_count() >= n);
        assert!(arrived, "{}: expected {n} requests within {timeout:?}, got {}", self.url(), self.request_count());
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        // Unblock accept() so the loop sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>, tls: Option<Arc<ServerConfig>>) {
    for stream in listener.incoming() {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(tcp) = stream else { continue };
        state.connections.fetch_add(1, Ordering::SeqCst);
        // Latency figures must not include Nagle's delay.
        let _ = tcp.set_nodelay(true);
        let (state, tls) = (Arc::clone(&state), tls.clone());
        thread::spawn(move || match tls {
            None => serve(tcp, &state),
            Some(config) => {
                if let Ok(conn) = ServerConnection::new(config) {
                    serve(StreamOwned::new(conn, tcp), &state);
                }
            }
        });
    }
}

/// Answers requests on one connection until the client closes it or an I/O
/// error (a refused TLS handshake, a client that gave up) ends it.
fn serve<S: Read + Write>(stream: S, state: &State) {
    let mut conn = BufReader::new(stream);
    while let Ok(Some(request)) = read_request(&mut conn) {
        let close = request.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = state.record(request);
        thread::sleep(reply.delay);
        if write_reply(conn.get_mut(), &reply).is_err() || close {
            return;
        }
    }
}

/// `Ok(None)` when the client closed the connection between requests.
fn read_request(conn: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let (method, path) = match (words.next(), words.next()) {
        (Some(method), Some(path)) => (method.to_owned(), path.to_owned()),
        _ => return Err(invalid(format!("bad request line {line:?}"))),
    };
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("bad header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request { method, path, headers, body: Vec::new(), at: Instant::now() };
    if request.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        request.body = read_chunked(conn)?;
    } else if let Some(len) = request.header("content-length") {
        let len = len.parse().map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        request.body = vec![0; len];
        conn.read_exact(&mut request.body)?;
    }
    request.at = Instant::now();
    Ok(Some(request))
}

fn read_chunked(conn: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        let start = body.len();
        // The chunk, then its CRLF (or, after the last chunk, the final CRLF).
        body.resize(start + size + 2, 0);
        conn.read_exact(&mut body[start..])?;
        body.truncate(start + size);
        if size == 0 {
            return Ok(body);
        }
    }
}

fn write_reply(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let body = format!("test receiver: {}", reply.status);
    let mut head = format!("HTTP/1.1 {} Test\r\ncontent-length: {}\r\n", reply.status, body.len());
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
