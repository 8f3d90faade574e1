//! New connections and the ones kept for reuse: name resolution (with a
//! short cache), the SSRF check of every address, TCP and TLS, the HTTP
//! handshake. A connection goes to exactly an address that passed the check.
//!
//! HTTPS offers `h2` and `http/1.1` by ALPN. A receiver that picks `h2` gets
//! one connection per host, shared by every request in flight as concurrent
//! streams (the dispatcher's per-endpoint limits still say how many); any
//! other gets HTTP/1.1 connections, one request at a time each, kept idle
//! between requests. Plain `http` is always HTTP/1.1: a receiver cannot offer
//! h2 there, and prior knowledge would break every one that does not speak it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::client::{Client, SendError};
use super::policy::{check_ip, Refusal, TargetUrl};

/// How long a host name's resolved addresses are reused, so that a named
/// endpoint does not cost a getaddrinfo (often a DNS round trip) per new
/// connection. Cached addresses are checked on every use like fresh ones.
const DNS_CACHE_TTL: Duration = Duration::from_secs(10);
/// Beyond this many cached hosts, expired entries are dropped on insert.
const DNS_CACHE_SOFT_LIMIT: usize = 1024;

/// Where a pooled connection goes: scheme, host as written, port.
pub(super) type PoolKey = (bool, String, u16);

/// One connection's request side, with the address it is connected to.
pub(super) enum Sender {
    /// One request at a time: checked out of the idle pool, checked back in
    /// once its response was read to the end.
    Http1(http1::SendRequest<Full<Bytes>>, SocketAddr),
    /// Many at once: stays in the pool, and each request takes a clone.
    Http2(http2::SendRequest<Full<Bytes>>, SocketAddr),
}

impl Sender {
    pub(super) async fn send_request(
        &mut self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, hyper::Error> {
        match self {
            Sender::Http1(s, _) => s.send_request(request).await,
            Sender::Http2(s, _) => s.send_request(request).await,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s, _) => s.is_closed(),
            Sender::Http2(s, _) => s.is_closed(),
        }
    }

    /// The address the connection went to (after DNS and the SSRF check).
    pub(super) fn peer(&self) -> SocketAddr {
        match self {
            Sender::Http1(_, peer) | Sender::Http2(_, peer) => *peer,
        }
    }

    pub(super) fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(..))
    }
}

/// An HTTP/1.1 connection's request side, with its address.
type Http1Sender = (http1::SendRequest<Full<Bytes>>, SocketAddr);

/// Connections kept for the next requests, per [`PoolKey`].
#[derive(Default)]
pub(super) struct Pool {
    idle: HashMap<PoolKey, Vec<Http1Sender>>,
    shared: HashMap<PoolKey, (http2::SendRequest<Full<Bytes>>, SocketAddr)>,
    /// Hosts that chose HTTP/2: one request at a time opens their connection
    /// (see [`Client::open`]).
    h2_gates: HashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>,
}

/// Host name → when it was resolved, and to what.
pub(super) type DnsCache = HashMap<Box<str>, (Instant, Arc<[IpAddr]>)>;

/// Locks that no panicking code holds: a poisoned one is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// The host's HTTP/2 connection, shared, or an idle HTTP/1.1 one.
    pub(super) fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut pool = lock(&self.pool);
        if let Some((shared, peer)) = pool.shared.get(key) {
            if !shared.is_closed() {
                return Some(Sender::Http2(shared.clone(), *peer));
            }
            pool.shared.remove(key);
        }
        let senders = pool.idle.get_mut(key)?;
        while let Some((sender, peer)) = senders.pop() {
            if sender.is_ready() {
                return Some(Sender::Http1(sender, peer));
            }
        }
        None
    }

    /// Keeps an HTTP/1.1 connection, whose response was read to its end, for
    /// the next request.
    pub(super) fn checkin(
        &self,
        key: PoolKey,
        sender: http1::SendRequest<Full<Bytes>>,
        peer: SocketAddr,
    ) {
        if sender.is_closed() {
            return;
        }
        let mut pool = lock(&self.pool);
        let senders = pool.idle.entry(key).or_default();
        if senders.len() < self.max_idle_per_host {
            senders.push((sender, peer));
        }
    }

    /// Shares a new HTTP/2 connection as soon as it is made, so that the
    /// requests that follow use it. Requests that started before it was made
    /// opened their own; the first one made stays, and the others close when
    /// their requests end.
    fn share(&self, key: &PoolKey, sender: &http2::SendRequest<Full<Bytes>>, peer: SocketAddr) {
        let mut pool = lock(&self.pool);
        pool.h2_gates.entry(key.clone()).or_default();
        let kept = pool
            .shared
            .entry(key.clone())
            .or_insert_with(|| (sender.clone(), peer));
        if kept.0.is_closed() {
            *kept = (sender.clone(), peer);
        }
    }

    /// A new connection for a request that found none to use. An HTTP/2 one
    /// goes into the pool at once, for the requests that start while this
    /// one runs. To a host known to speak HTTP/2, the requests that find its
    /// connection gone (closed by the server after its request limit, say)
    /// wait for the first of them to open the next one, and share it, rather
    /// than each opening its own.
    pub(super) async fn open(
        &self,
        target: &TargetUrl,
        key: &PoolKey,
    ) -> Result<Sender, SendError> {
        let gate = lock(&self.pool).h2_gates.get(key).cloned();
        // A turn that does not come within the connect timeout (the one
        // connecting is stuck) is not waited for.
        let turn = match &gate {
            Some(gate) => tokio::time::timeout(self.connect_timeout, gate.lock())
                .await
                .ok(),
            None => None,
        };
        if turn.is_some() {
            if let Some(sender) = self.checkout(key) {
                return Ok(sender);
            }
        }
        let sender = self.connect(target).await?;
        match &sender {
            Sender::Http2(shared, peer) => self.share(key, shared, *peer),
            // The host no longer picks h2: its connections open in parallel again.
            Sender::Http1(..) => {
                lock(&self.pool).h2_gates.remove(key);
            }
        }
        Ok(sender)
    }

    /// Forgets the host's shared HTTP/2 connection (it refused a request):
    /// the next request opens another.
    pub(super) fn evict(&self, key: &PoolKey) {
        lock(&self.pool).shared.remove(key);
    }

    /// A new connection to the first checked address that answers.
    pub(super) async fn connect(&self, target: &TargetUrl) -> Result<Sender, SendError> {
        let mut last = SendError::Dns("host not found".to_owned());
        for addr in self.resolve(&target.host, target.port).await? {
            let tcp =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                    Err(_) => {
                        last = SendError::ConnectTimeout;
                        continue;
                    }
                    Ok(Err(e)) => {
                        last = SendError::Connect(e);
                        continue;
                    }
                    Ok(Ok(tcp)) => tcp,
                };
            // Requests are written whole; Nagle would only delay them.
            let _ = tcp.set_nodelay(true);
            return if target.scheme_https {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| SendError::InvalidRequest(format!("tls server name: {e}")))?;
                let tls = self.tls.connect(name, tcp).await.map_err(SendError::Tls)?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                self.handshake(TokioIo::new(tls), h2, addr).await
            } else {
                self.handshake(TokioIo::new(tcp), false, addr).await
            };
        }
        Err(last)
    }

    /// The host's addresses that the SSRF policy allows, with `port`.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SendError> {
        let literal = host.parse::<IpAddr>().ok();
        let candidates: Arc<[IpAddr]> = match literal {
            Some(ip) => Arc::new([ip]),
            None => self.lookup(host).await?,
        };
        let mut refused = None;
        let mut addrs = Vec::with_capacity(candidates.len());
        for &ip in candidates.iter() {
            match check_ip(ip, &self.allowed) {
                Ok(()) => addrs.push(SocketAddr::new(ip, port)),
                Err(refusal) => {
                    refused.get_or_insert(refusal);
                }
            }
        }
        match (addrs.is_empty(), refused) {
            (false, _) => Ok(addrs),
            (true, Some(refusal)) => Err(SendError::Refused(Refusal {
                host: literal.is_none().then(|| host.to_owned()),
                ..refusal
            })),
            (true, None) => Err(SendError::Dns("host not found".to_owned())),
        }
    }

    /// The host's addresses, from the cache or from getaddrinfo on a blocking
    /// thread (it has no timeout of its own; the attempt's timeout ends the wait).
    async fn lookup(&self, host: &str) -> Result<Arc<[IpAddr]>, SendError> {
        if let Some((at, ips)) = lock(&self.dns).get(host) {
            if at.elapsed() < DNS_CACHE_TTL {
                return Ok(ips.clone());
            }
        }
        let name = host.to_owned();
        let found = tokio::task::spawn_blocking(move || (name.as_str(), 0).to_socket_addrs())
            .await
            .map_err(|e| SendError::Dns(format!("cannot resolve {host}: {e}")))?
            .map_err(|e| SendError::Dns(format!("cannot resolve {host}: {e}")))?;
        let ips: Arc<[IpAddr]> = found.map(|a| a.ip()).collect();
        if ips.is_empty() {
            return Err(SendError::Dns("host not found".to_owned()));
        }
        let mut cache = lock(&self.dns);
        if cache.len() >= DNS_CACHE_SOFT_LIMIT {
            cache.retain(|_, (at, _)| at.elapsed() < DNS_CACHE_TTL);
        }
        cache.insert(host.into(), (Instant::now(), ips.clone()));
        Ok(ips)
    }

    /// HTTP/2 (when ALPN chose it) or HTTP/1.1 over a fresh connection; the
    /// connection's task runs on the current runtime until either side
    /// closes it. An HTTP/2 connection is pinged while requests are in
    /// flight: one that stopped answering is closed (and so leaves the pool)
    /// instead of taking every request to its host into a timeout.
    async fn handshake<T>(&self, io: T, h2: bool, peer: SocketAddr) -> Result<Sender, SendError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(self.timeout)
                .keep_alive_timeout(self.connect_timeout)
                .handshake(io)
                .await
                .map_err(SendError::Http)?;
            tokio::spawn(connection);
            return Ok(Sender::Http2(sender, peer));
        }
        let (sender, connection) = http1::handshake(io).await.map_err(SendError::Http)?;
        tokio::spawn(connection);
        Ok(Sender::Http1(sender, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::test_runtime;
    use super::super::client::tests::{config, loopback_client, request};
    use super::super::test_server::{response, serve};
    use super::*;
    use crate::delivery::HttpConfig;
    use std::io;
    use std::net::TcpListener;

    /// A loopback listener with a full accept queue: the kernel drops further
    /// SYNs, so a new connection hangs until the client gives up.
    fn saturated_listener() -> (TcpListener, Vec<std::net::TcpStream>) {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor owned by `listener` from
        // the moment it exists.
        let listener = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let listener = TcpListener::from_raw_fd(fd);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
            listener
        };
        let target = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                Ok(stream) => fillers.push(stream),
                Err(_) => return (listener, fillers),
            }
        }
        panic!("the accept queue never filled up");
    }

    #[test]
    fn connect_timeout_is_reported() {
        let (listener, _fillers) = saturated_listener();
        let cfg = HttpConfig {
            connect_timeout: Duration::from_millis(300),
            ..config("127.0.0.0/8")
        };
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let outcome = Client::new(&cfg)
            .expect("client")
            .send_blocking(&request(url));
        assert_eq!(outcome.status, None);
        assert_eq!(
            outcome.error.as_deref(),
            Some("timeout: no connection within 300ms")
        );
        assert_eq!(
            outcome.failure,
            Some(crate::delivery::FailureClass::Connect)
        );
        assert_eq!(outcome.remote_addr, None);
        assert!(
            (250..3000).contains(&outcome.duration_ms),
            "{}",
            outcome.duration_ms
        );
    }

    #[test]
    fn connection_refused_is_reported() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let outcome =
            loopback_client().send_blocking(&request(format!("http://127.0.0.1:{port}/")));
        assert_eq!(outcome.status, None);
        assert_eq!(outcome.error.as_deref(), Some("connection refused"));
        assert!(!outcome.permanent);
        assert_eq!(
            outcome.failure,
            Some(crate::delivery::FailureClass::Connect)
        );
    }

    #[test]
    fn loopback_disguises_are_refused_before_any_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let client = Client::new(&config("")).expect("client");
        let cases = [
            (
                "127.0.0.1",
                "refused by SSRF guard: 127.0.0.1 is loopback (rule loopback)",
            ),
            ("localhost", "refused by SSRF guard: localhost resolves to "),
            (
                "127.1",
                "127.1 resolves to 127.0.0.1, which is loopback (rule loopback)",
            ),
            (
                "2130706433",
                "2130706433 resolves to 127.0.0.1, which is loopback (rule loopback)",
            ),
            (
                "0x7f000001",
                "0x7f000001 resolves to 127.0.0.1, which is loopback (rule loopback)",
            ),
            (
                "[::ffff:127.0.0.1]",
                "::ffff:127.0.0.1 is loopback (rule loopback)",
            ),
            ("[::1]", "::1 is loopback (rule loopback)"),
            (
                "0.0.0.0",
                "0.0.0.0 is the unspecified (this-host) address (rule unspecified)",
            ),
            (
                "[::]",
                ":: is the unspecified (this-host) address (rule unspecified)",
            ),
        ];
        for (host, want) in cases {
            let outcome = client.send_blocking(&request(format!("http://{host}:{port}/")));
            let error = outcome.error.unwrap_or_default();
            assert!(error.contains(want), "{host}: {error}");
            assert!(
                error.contains("add it to webhook_outbox.allowed_cidrs"),
                "{host}: {error}"
            );
            assert!(outcome.permanent, "{host}");
            assert_eq!(outcome.status, None, "{host}");
        }
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "a refused target was connected to: {accepted:?}"
        );
    }

    #[test]
    fn allowed_names_connect_only_to_checked_addresses() {
        // localhost is usually ::1 and 127.0.0.1; only the IPv4 one is allowed
        // and the server listens only there.
        let server = serve(|_| Some(response(200, &[], b"")));
        let client = loopback_client();
        for _ in 0..3 {
            let outcome = client.send_blocking(&request(format!(
                "http://localhost:{}/",
                server.addr.port()
            )));
            assert_eq!((outcome.status, outcome.error), (Some(200), None));
        }
        let outcome = client.send_blocking(&request(format!(
            "http://[::ffff:127.0.0.1]:{}/",
            server.addr.port()
        )));
        assert_eq!(
            (outcome.status, outcome.error),
            (Some(200), None),
            "mapped form of an allowed address"
        );
    }

    #[test]
    fn keep_alive_reuses_one_connection() {
        let server = serve(|_| Some(response(204, &[], b"")));
        let client = loopback_client();
        for i in 0..200 {
            let outcome = client.send_blocking(&request(server.url("/")));
            assert_eq!(
                outcome.status,
                Some(204),
                "request {i}: {:?}",
                outcome.error
            );
        }
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn concurrent_sends_share_one_client_and_its_pool() {
        let server = serve(|_| Some(response(200, &[], b"ok")));
        let client = Arc::new(loopback_client());
        let url = server.url("/");
        let runtime = test_runtime();
        let all_ok = runtime.block_on(async {
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        let mut ok = true;
                        for _ in 0..50 {
                            ok &= client.send(&request(url.clone())).await.status == Some(200);
                        }
                        ok
                    })
                })
                .collect();
            let mut all = true;
            for task in tasks {
                all &= task.await.expect("task");
            }
            all
        });
        assert!(all_ok, "every send succeeds");
        assert!(
            server.connections() <= 4,
            "{} connections",
            server.connections()
        );
    }
}
