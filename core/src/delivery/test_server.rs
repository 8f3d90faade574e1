//! A tiny HTTP/1.1 server on 127.0.0.1 for the client tests: it records each
//! request, answers with a canned response and keeps connections alive. It only
//! ever listens on loopback; its threads end with the test process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// A request as the server read it. Header names are lowercase.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of header `name`.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`; panics when absent or repeated.
    pub fn header(&self, name: &str) -> &str {
        match self.header_values(name).as_slice() {
            [one] => one,
            other => panic!("header {name}: expected one value, got {other:?}"),
        }
    }
}

/// What to do with a request: `Some(bytes)` is written back, `None` leaves the
/// client waiting until it gives up.
pub type Responder = dyn Fn(&Recorded) -> Option<Vec<u8>> + Send + Sync;

pub trait Stream: Read + Write + Send {}
impl<S: Read + Write + Send> Stream for S {}

/// Turns an accepted TCP connection into the stream to serve (TLS in
/// `tls_tests`), or `None` to drop it.
pub type Wrapper = dyn Fn(TcpStream) -> Option<Box<dyn Stream>> + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: mpsc::Receiver<Recorded>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The next request received, waiting up to 5 s for it.
    pub fn next_request(&self) -> Recorded {
        self.requests
            .recv_timeout(Duration::from_secs(5))
            .expect("the server received no request")
    }

    /// Requests received so far, without waiting.
    pub fn received(&self) -> Vec<Recorded> {
        self.requests.try_iter().collect()
    }
}

pub fn serve(respond: impl Fn(&Recorded) -> Option<Vec<u8>> + Send + Sync + 'static) -> Server {
    serve_with(
        Arc::new(|tcp| Some(Box::new(tcp) as Box<dyn Stream>)),
        Arc::new(respond),
    )
}

pub fn serve_with(wrap: Arc<Wrapper>, respond: Arc<Responder>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let (tx, requests) = mpsc::channel();
    let counter = connections.clone();
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let (wrap, respond, tx) = (wrap.clone(), respond.clone(), tx.clone());
            thread::spawn(move || {
                if let Some(stream) = wrap(tcp) {
                    serve_connection(stream, &*respond, &tx);
                }
            });
        }
    });
    Server {
        addr,
        connections,
        requests,
    }
}

fn serve_connection(stream: Box<dyn Stream>, respond: &Responder, tx: &mpsc::Sender<Recorded>) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let reply = respond(&request);
        let _ = tx.send(request);
        match reply {
            Some(bytes) => {
                let stream = reader.get_mut();
                if stream
                    .write_all(&bytes)
                    .and_then(|_| stream.flush())
                    .is_err()
                {
                    return;
                }
            }
            None => {
                // Hang: hold the connection until the client closes it.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            }
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Recorded> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let request_line = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        request_line,
        headers,
        body,
    })
}

/// A complete HTTP/1.1 response with a content-length.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} Status\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
