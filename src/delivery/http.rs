//! The HTTP client of the delivery engine: one signed `POST` per attempt,
//! described as an [`Outcome`] that the settle step turns into sent/retry/dead.
//!
//! [`Client::send`] is a future: the engine runs every request in flight on
//! one tokio thread, so a request costs a few system calls on a ready socket
//! instead of a blocking thread's sleep and wake-up. Connections are HTTP/1.1
//! (hyper), kept alive in a pool per scheme, host and port; one [`Client`] is
//! shared by all requests; rebuild it when [`HttpConfig`] changes. `send` never
//! panics and never follows a redirect. Every address connected to has passed
//! the SSRF guard, and the connection goes to exactly that address: no second
//! lookup can swap in one that was not checked (DNS rebinding).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use std::{fmt, fs};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, USER_AGENT,
};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::policy::{check_ip, validate_url, Cidr, Refusal, TargetUrl};
use super::signature::sign;

/// The response body is read up to this many bytes; the rest is discarded
/// (the connection is then closed rather than drained).
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;
/// How much of a redirect's `Location` an error message quotes.
const MAX_LOCATION_BYTES: usize = 256;

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// How much of the response body is kept in [`Outcome::response_prefix`].
pub const RESPONSE_PREFIX_BYTES: usize = 1024;

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Headers an endpoint's extra headers may not set: the signature headers and
/// content-type define the webhook, the others frame the HTTP message.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// How long a host name's resolved addresses are reused, so that a named
/// endpoint does not cost a getaddrinfo (often a DNS round trip) per new
/// connection. Cached addresses are checked on every use like fresh ones.
const DNS_CACHE_TTL: Duration = Duration::from_secs(10);
/// Beyond this many cached hosts, expired entries are dropped on insert.
const DNS_CACHE_SOFT_LIMIT: usize = 1024;

/// Everything that shapes the client. Compare with the current one after a
/// configuration reload and build a new [`Client`] only when it differs.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Whole attempt: DNS, connect, TLS, request, response and body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Empty sends no user-agent header.
    pub user_agent: String,
    /// PEM file with extra trusted CA certificates, added to the webpki roots.
    pub ca_file: Option<String>,
    /// Networks the SSRF guard lets through (`webhook_outbox.allowed_cidrs`).
    pub allowed_cidrs: Vec<Cidr>,
    pub allow_http: bool,
    /// Idle keep-alive connections kept per host; size it to the number of
    /// requests in flight.
    pub max_connections: usize,
}

/// One delivery attempt.
#[derive(Clone)]
pub struct Request {
    pub url: String,
    /// `webhook-id`: the same for every attempt of one delivery.
    pub webhook_id: String,
    /// `webhook-timestamp`, unix seconds of this attempt.
    pub timestamp: i64,
    /// The stored JSON, sent byte for byte.
    pub body: String,
    /// The endpoint's extra headers. Reserved names (see [`validate_header`])
    /// are skipped.
    pub headers: Vec<(String, String)>,
    /// The decoded `whsec_` secret.
    pub signing_key: Vec<u8>,
}

/// Keeps the signing key out of logs.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("url", &self.url)
            .field("webhook_id", &self.webhook_id)
            .field("timestamp", &self.timestamp)
            .field("body", &self.body)
            .field("headers", &self.headers)
            .field("signing_key", &"<redacted>")
            .finish()
    }
}

/// What happened to one attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The response status; `None` when no response arrived.
    pub status: Option<u16>,
    pub duration_ms: u32,
    /// Set for a network failure, a refusal, a redirect, or a body that could
    /// not be read. Plain error statuses (4xx, 5xx) leave it `None`.
    pub error: Option<String>,
    /// `Retry-After` of a 429 or 503 response.
    pub retry_after: Option<Duration>,
    /// The first [`RESPONSE_PREFIX_BYTES`] of the body as text (invalid UTF-8
    /// and NUL replaced), `None` for an empty body.
    pub response_prefix: Option<String>,
    /// Retrying cannot help: the URL, a header or the destination address is
    /// refused by policy.
    pub permanent: bool,
}

/// Where a pooled connection goes: scheme, host as written, port.
type PoolKey = (bool, String, u16);
type Sender = SendRequest<Full<Bytes>>;

/// `Send + Sync`: share it behind an `Arc`. `send` must run inside a tokio
/// runtime (with timers), which also drives the pooled connections.
pub struct Client {
    tls: TlsConnector,
    allowed: Vec<Cidr>,
    allow_http: bool,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: Option<HeaderValue>,
    max_idle_per_host: usize,
    idle: Mutex<HashMap<PoolKey, Vec<Sender>>>,
    dns: Mutex<DnsCache>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Longest event id, type or subject: the id is a header value and part of
/// the (endpoint_id, event_id) key, whose btree entries have a size limit.
pub const MAX_EVENT_KEY_BYTES: usize = 255;

/// Checks an event's id, type or subject where it is given (enqueue, emit,
/// backfill): 1 to 255 printable ASCII characters, which any HTTP header
/// value may carry. Caught there, never later as a dead letter or an index
/// error that aborts the caller's transaction.
pub fn check_event_key(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_EVENT_KEY_BYTES {
        return Err(format!(
            "{field} must be 1 to {MAX_EVENT_KEY_BYTES} bytes long, got {}",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "{field} contains {c:?}: only printable ASCII characters (space to ~) are allowed, as in an HTTP header"
        ));
    }
    Ok(())
}

/// Checks one of an endpoint's extra headers, for `create_endpoint`.
pub fn validate_header(name: &str, value: &str) -> Result<(), String> {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "header name \"{name}\" is not a valid HTTP header name"
        ));
    }
    if is_reserved(name) {
        return Err(format!(
            "header \"{name}\" is set by webhook_outbox and cannot be overridden"
        ));
    }
    if HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "header \"{name}\" has an invalid value: it must be printable ASCII without line breaks"
        ));
    }
    Ok(())
}

fn is_reserved(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Why an attempt got no response.
#[derive(Debug)]
enum SendError {
    Refused(Refusal),
    InvalidRequest(String),
    Dns(String),
    ConnectTimeout,
    Io(io::Error),
    Tls(io::Error),
    Http(hyper::Error),
}

/// Locks that no panicking code holds: a poisoned one is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    pub fn new(cfg: &HttpConfig) -> Result<Client, String> {
        let user_agent = match cfg.user_agent.as_str() {
            "" => None,
            ua => Some(HeaderValue::from_str(ua).map_err(|_| {
                format!(
                    "webhook_outbox.user_agent \"{}\" is not a valid header value",
                    cfg.user_agent.escape_debug()
                )
            })?),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(root_certs(
                cfg.ca_file.as_deref().filter(|p| !p.is_empty()),
            )?)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(tls)),
            allowed: cfg.allowed_cidrs.clone(),
            allow_http: cfg.allow_http,
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            user_agent,
            max_idle_per_host: cfg.max_connections.max(1),
            idle: Mutex::default(),
            dns: Mutex::default(),
        })
    }

    /// Sends one attempt and describes what happened.
    pub async fn send(&self, req: &Request) -> Outcome {
        let started = Instant::now();
        let mut outcome = match validate_url(&req.url, self.allow_http) {
            Err(e) => failure(e.to_string(), true),
            Ok(target) => {
                match tokio::time::timeout(self.timeout, self.exchange(&target, req)).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => {
                        let (message, permanent) = self.explain(e);
                        failure(message, permanent)
                    }
                    Err(_) => failure(self.timed_out(), false),
                }
            }
        };
        outcome.duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        outcome
    }

    fn timed_out(&self) -> String {
        format!("timeout: no complete response within {:?}", self.timeout)
    }

    async fn exchange(&self, target: &TargetUrl, req: &Request) -> Result<Outcome, SendError> {
        let key: PoolKey = (target.scheme_https, target.host.clone(), target.port);
        // A pooled connection the server closed meanwhile fails before any
        // response: that request goes again, once, on a new connection.
        let response = match self.checkout(&key) {
            Some(mut sender) => match sender.send_request(self.build(target, req)?).await {
                // Built again rather than cloned up front: the retry is rare, a
                // clone of every request's headers would not be.
                Err(e) if e.is_canceled() || e.is_incomplete_message() || sender.is_closed() => {
                    let mut fresh = self.connect(target).await?;
                    let response = fresh.send_request(self.build(target, req)?).await;
                    response.map(|r| (r, fresh))
                }
                other => other.map(|r| (r, sender)),
            },
            None => {
                let mut sender = self.connect(target).await?;
                sender
                    .send_request(self.build(target, req)?)
                    .await
                    .map(|r| (r, sender))
            }
        };
        let (response, sender) = response.map_err(SendError::Http)?;
        let status = response.status();
        let header_text = |name: HeaderName| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let redirect = status.is_redirection().then(|| {
            let mut location = header_text(LOCATION).unwrap_or_else(|| "nowhere".to_owned());
            // The receiver chooses it: keep enough to recognise it, no more.
            truncate(&mut location, MAX_LOCATION_BYTES);
            format!(
                "redirect not followed (status {} to {location})",
                status.as_u16()
            )
        });
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                header_text(RETRY_AFTER)
                    .and_then(|v: String| parse_retry_after(&v, SystemTime::now()))
            }
            _ => None,
        };
        let (response_prefix, body_error) = match read_prefix(response.into_body()).await {
            Ok((prefix, complete)) => {
                // Only a connection whose response was read to its end can carry the next request.
                if complete {
                    self.checkin(key, sender);
                }
                (prefix, None)
            }
            Err(e) => {
                let (message, _) = self.explain(SendError::Http(e));
                (None, Some(format!("reading response body: {message}")))
            }
        };
        Ok(Outcome {
            status: Some(status.as_u16()),
            error: redirect.or(body_error),
            retry_after,
            response_prefix,
            ..Outcome::default()
        })
    }

    /// The signed request, in origin form with the Host header as written.
    fn build(
        &self,
        target: &TargetUrl,
        req: &Request,
    ) -> Result<http::Request<Full<Bytes>>, SendError> {
        let body = Bytes::from(req.body.clone());
        let signature = sign(&req.signing_key, &req.webhook_id, req.timestamp, &body);
        let authority = target
            .uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let path = target
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let invalid = |e: http::Error| SendError::InvalidRequest(e.to_string());
        let mut builder = http::Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, authority)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(WEBHOOK_ID, req.webhook_id.as_str())
            .header(WEBHOOK_TIMESTAMP, req.timestamp)
            .header(WEBHOOK_SIGNATURE, signature);
        let mut own_agent = false;
        for (name, value) in req.headers.iter().filter(|(name, _)| !is_reserved(name)) {
            own_agent |= name.eq_ignore_ascii_case("user-agent");
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(ua) = self.user_agent.as_ref().filter(|_| !own_agent) {
            builder = builder.header(USER_AGENT, ua.clone());
        }
        builder.body(Full::new(body)).map_err(invalid)
    }

    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        let senders = idle.get_mut(key)?;
        while let Some(sender) = senders.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        let senders = idle.entry(key).or_default();
        if senders.len() < self.max_idle_per_host {
            senders.push(sender);
        }
    }

    /// A new connection to the first checked address that answers.
    async fn connect(&self, target: &TargetUrl) -> Result<Sender, SendError> {
        let mut last = SendError::Dns("host not found".to_owned());
        for addr in self.resolve(&target.host, target.port).await? {
            let tcp =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                    Err(_) => {
                        last = SendError::ConnectTimeout;
                        continue;
                    }
                    Ok(Err(e)) => {
                        last = SendError::Io(e);
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
                handshake(TokioIo::new(tls)).await
            } else {
                handshake(TokioIo::new(tcp)).await
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

    /// A message for `last_error`, and whether retrying is pointless.
    fn explain(&self, err: SendError) -> (String, bool) {
        let message = match err {
            SendError::Refused(refusal) => return (refusal.to_string(), true),
            SendError::InvalidRequest(e) => return (format!("invalid request: {e}"), true),
            SendError::Dns(e) => format!("dns: {e}"),
            SendError::ConnectTimeout => {
                format!("timeout: no connection within {:?}", self.connect_timeout)
            }
            SendError::Tls(e) if e.kind() == io::ErrorKind::InvalidData => format!("tls: {e}"),
            SendError::Io(e) | SendError::Tls(e) => self.io_message(&e),
            SendError::Http(e) => {
                let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>());
                match io {
                    Some(io) => self.io_message(io),
                    None if e.is_incomplete_message() || e.is_canceled() || e.is_closed() => {
                        "connection closed before a complete response".to_owned()
                    }
                    None if e.is_parse() || e.is_parse_status() => {
                        format!("invalid HTTP response: {e}")
                    }
                    None if e.is_timeout() => self.timed_out(),
                    None => format!("network error: {e}"),
                }
            }
        };
        (message, false)
    }

    fn io_message(&self, e: &io::Error) -> String {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            io::ErrorKind::ConnectionReset => "connection reset by peer".to_owned(),
            io::ErrorKind::UnexpectedEof => {
                "connection closed before a complete response".to_owned()
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.timed_out(),
            _ => format!("network error: {e}"),
        }
    }
}

/// HTTP/1.1 over a fresh connection; the connection's task runs on the
/// current runtime until either side closes it.
async fn handshake<T>(io: T) -> Result<Sender, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(connection);
    Ok(sender)
}

fn failure(message: String, permanent: bool) -> Outcome {
    Outcome {
        error: Some(message),
        permanent,
        ..Outcome::default()
    }
}

/// Webpki's roots plus those of `ca_file`.
fn root_certs(ca_file: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Roots this rustls cannot parse are skipped, as browsers do.
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = fs::read(path)
            .map_err(|e| format!("webhook_outbox.ca_file: cannot read \"{path}\": {e}"))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .map_err(|e| format!("webhook_outbox.ca_file: \"{path}\" is not valid PEM: {e}"))?;
            roots.add(cert).map_err(|e| {
                format!("webhook_outbox.ca_file: \"{path}\" holds an invalid certificate: {e}")
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(format!(
                "webhook_outbox.ca_file: \"{path}\" holds no \"BEGIN CERTIFICATE\" block"
            ));
        }
    }
    Ok(roots)
}

/// Reads at most [`RESPONSE_BODY_CAP`] bytes, keeping the first
/// [`RESPONSE_PREFIX_BYTES`]; says whether the body was read to its end.
async fn read_prefix(
    mut body: hyper::body::Incoming,
) -> Result<(Option<String>, bool), hyper::Error> {
    let mut prefix = Vec::new();
    let mut read = 0;
    let complete = loop {
        if read >= RESPONSE_BODY_CAP {
            break body.is_end_stream();
        }
        let Some(frame) = body.frame().await else {
            break true;
        };
        if let Ok(data) = frame?.into_data() {
            let keep = RESPONSE_PREFIX_BYTES
                .saturating_sub(prefix.len())
                .min(data.len());
            prefix.extend_from_slice(&data[..keep]);
            read += data.len();
        }
    };
    Ok(((!prefix.is_empty()).then(|| prefix_text(&prefix)), complete))
}

/// Host name → when it was resolved, and to what.
type DnsCache = HashMap<Box<str>, (Instant, Arc<[IpAddr]>)>;

/// Text for a `text` column: a multi-byte character cut by the prefix limit is
/// dropped rather than shown as garbage, and NUL, which Postgres text cannot
/// hold, becomes U+FFFD like any invalid byte.
fn prefix_text(bytes: &[u8]) -> String {
    let end = match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => bytes.len(),
    };
    String::from_utf8_lossy(&bytes[..end]).replace('\0', "\u{FFFD}")
}

/// `Retry-After` as delta-seconds or an IMF-fixdate (the date form senders
/// must use); a date in the past means "now".
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if s.len() != 29 || s.get(3..5)? != ", " || s.get(25..)? != " GMT" {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = s.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| Some(*m) == s.get(8..11))? as i64 + 1;
    let year = num(12..16)?;
    let (hour, minute, second) = (num(17..19)?, num(20..22)?, num(23..25)?);
    let separators_ok = s.get(7..8)? == " "
        && s.get(11..12)? == " "
        && s.get(16..17)? == " "
        && s.get(19..20)? == ":"
        && s.get(22..23)? == ":";
    if !separators_ok || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Tests send from plain threads: each keeps one runtime, which also drives
/// the connections its client pooled.
#[cfg(test)]
pub(crate) fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[cfg(test)]
impl Client {
    pub(crate) fn send_blocking(&self, req: &Request) -> Outcome {
        thread_local! {
            static RUNTIME: tokio::runtime::Runtime = test_runtime();
        }
        RUNTIME.with(|rt| rt.block_on(self.send(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::policy::parse_cidrs;
    use crate::delivery::signature::tests::reference_signature;
    use crate::delivery::test_server::{response, serve};
    use std::net::TcpListener;

    #[test]
    fn event_keys_are_printable_ascii_of_bounded_length() {
        assert!(check_event_key("event_id", "order-42-paid").is_ok());
        assert!(check_event_key("event_id", &"x".repeat(255)).is_ok());
        assert!(check_event_key("event_id", &"x".repeat(256))
            .unwrap_err()
            .contains("1 to 255 bytes"));
        assert!(check_event_key("event_id", "")
            .unwrap_err()
            .contains("1 to 255 bytes"));
        assert!(check_event_key("subject_id", "a\r\nx-evil: 1")
            .unwrap_err()
            .contains("'\\r'"));
        assert!(check_event_key("event_type", "caf\u{e9}")
            .unwrap_err()
            .contains("printable ASCII"));
    }

    fn config(allowed: &str) -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            user_agent: "webhook_outbox-test/1".into(),
            ca_file: None,
            allowed_cidrs: parse_cidrs(allowed).expect("test CIDRs"),
            allow_http: true,
            max_connections: 8,
        }
    }

    fn loopback_client() -> Client {
        Client::new(&config("127.0.0.0/8")).expect("client")
    }

    fn request(url: String) -> Request {
        Request {
            url,
            webhook_id: "msg_2Zx8bWkQ".into(),
            timestamp: 1_700_000_000,
            body: r#"{"type":"invoice.paid","data":{"id":42, "note":"ünï"}}"#.into(),
            headers: vec![],
            signing_key: vec![7; 24],
        }
    }

    #[test]
    fn client_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Client>();
    }

    #[test]
    fn success_is_captured() {
        let server = serve(|_| Some(response(200, &[], b"ok, thanks")));
        let outcome = loopback_client().send_blocking(&request(server.url("/hook")));
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.response_prefix.as_deref(), Some("ok, thanks"));
        assert_eq!(outcome.retry_after, None);
        assert!(!outcome.permanent);
        assert!(outcome.duration_ms < 5000);
    }

    #[test]
    fn sends_a_signed_standard_webhook() {
        let server = serve(|_| Some(response(204, &[], b"")));
        let mut req = request(server.url("/hooks/in?tenant=7"));
        req.headers = vec![
            ("X-Tenant".into(), "acme".into()),
            ("Authorization".into(), "Bearer t0ken".into()),
            // Reserved names never override what the worker sets.
            ("Content-Type".into(), "text/plain".into()),
            ("webhook-id".into(), "forged".into()),
            ("Webhook-Signature".into(), "v1,forged".into()),
        ];
        let outcome = loopback_client().send_blocking(&req);
        assert_eq!(
            (outcome.status, outcome.error, outcome.response_prefix),
            (Some(204), None, None)
        );

        let seen = server.next_request();
        assert_eq!(seen.request_line, "POST /hooks/in?tenant=7 HTTP/1.1");
        assert_eq!(
            seen.body,
            req.body.as_bytes(),
            "body must be sent byte for byte"
        );
        assert_eq!(seen.header("content-type"), "application/json");
        assert_eq!(seen.header("content-length"), req.body.len().to_string());
        assert_eq!(seen.header("user-agent"), "webhook_outbox-test/1");
        assert_eq!(seen.header("x-tenant"), "acme");
        assert_eq!(seen.header("authorization"), "Bearer t0ken");
        assert_eq!(seen.header("webhook-id"), "msg_2Zx8bWkQ");
        assert_eq!(seen.header("webhook-timestamp"), "1700000000");
        let expected =
            reference_signature(&req.signing_key, "msg_2Zx8bWkQ", "1700000000", &seen.body);
        assert_eq!(seen.header("webhook-signature"), expected);
    }

    #[test]
    fn error_status_keeps_a_body_prefix() {
        let body = format!("{}{}", "é".repeat(600), "tail");
        let server = serve(move |_| Some(response(500, &[], body.as_bytes())));
        let outcome = loopback_client().send_blocking(&request(server.url("/")));
        assert_eq!(outcome.status, Some(500));
        assert_eq!(outcome.error, None, "a status is not a transport error");
        assert!(!outcome.permanent);
        // 1024 bytes hold exactly 512 two-byte characters.
        assert_eq!(outcome.response_prefix, Some("é".repeat(512)));
    }

    #[test]
    fn oversized_body_is_capped_and_the_client_carries_on() {
        let big = vec![b'x'; 300 * 1024];
        let server = serve(move |_| Some(response(200, &[], &big)));
        let client = loopback_client();
        for _ in 0..3 {
            let outcome = client.send_blocking(&request(server.url("/")));
            assert_eq!(outcome.status, Some(200));
            assert_eq!(outcome.error, None);
            assert_eq!(outcome.response_prefix.map(|p| p.len()), Some(1024));
        }
    }

    #[test]
    fn redirect_is_not_followed() {
        let server = serve(|req| {
            assert!(
                req.request_line.starts_with("POST /old "),
                "followed to {}",
                req.request_line
            );
            Some(response(
                302,
                &[("location", "http://127.0.0.1:1/new")],
                b"",
            ))
        });
        let outcome = loopback_client().send_blocking(&request(server.url("/old")));
        assert_eq!(outcome.status, Some(302));
        assert_eq!(
            outcome.error.as_deref(),
            Some("redirect not followed (status 302 to http://127.0.0.1:1/new)")
        );
        assert!(!outcome.permanent);
        assert_eq!(server.received().len(), 1);
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let cases = [(429, Some(7)), (503, Some(7)), (500, None), (200, None)];
        for (status, want) in cases {
            let server = serve(move |_| Some(response(status, &[("retry-after", "7")], b"")));
            let outcome = loopback_client().send_blocking(&request(server.url("/")));
            assert_eq!(outcome.status, Some(status));
            assert_eq!(
                outcome.retry_after,
                want.map(Duration::from_secs),
                "status {status}"
            );
        }
    }

    #[test]
    fn retry_after_formats() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777 unix seconds.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777 - 90);
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("120", Some(120)),
            (" 30 ", Some(30)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(90)),
            ("Sun, 06 Nov 1994 08:48:07 GMT", Some(0)),
            ("Sun, 06 Nov 1994 08:40:00 GMT", Some(0)), // in the past
            ("Mon, 07 Nov 1994 08:49:37 GMT", Some(90 + 86_400)),
            (
                "Thu, 29 Feb 2024 00:00:00 GMT",
                Some(1_709_164_800 - 784_111_777 + 90),
            ),
            ("Sun, 06 Nov 1994 08:49:37 UTC", None),
            ("Sunday, 06-Nov-94 08:49:37 GMT", None), // obsolete RFC 850 form
            ("Sun, 06 Foo 1994 08:49:37 GMT", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 24:49:37 GMT", None),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("99999999999999999999999", None),
        ];
        for &(value, want) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn hanging_server_times_out() {
        let server = serve(|_| None);
        let cfg = HttpConfig {
            timeout: Duration::from_millis(300),
            ..config("127.0.0.0/8")
        };
        let outcome = Client::new(&cfg)
            .expect("client")
            .send_blocking(&request(server.url("/")));
        assert_eq!(outcome.status, None);
        let error = outcome.error.unwrap_or_default();
        assert!(
            error.starts_with("timeout: no complete response within 300ms"),
            "{error}"
        );
        assert!(!outcome.permanent);
        assert!(
            (250..3000).contains(&outcome.duration_ms),
            "{}",
            outcome.duration_ms
        );
    }

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
    fn http_is_refused_unless_allowed() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let cfg = HttpConfig {
            allow_http: false,
            ..config("127.0.0.0/8")
        };
        let outcome = Client::new(&cfg)
            .expect("client")
            .send_blocking(&request(url));
        assert_eq!(
            outcome.error.as_deref(),
            Some("http URLs are refused while webhook_outbox.allow_http is off; use https")
        );
        assert!(outcome.permanent);
        assert!(listener.accept().is_err(), "no connection may be made");
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

    #[test]
    fn invalid_extra_header_fails_permanently_without_sending() {
        let server = serve(|_| Some(response(200, &[], b"")));
        let mut req = request(server.url("/"));
        req.headers = vec![("x-note".into(), "line\r\nbreak".into())];
        let outcome = loopback_client().send_blocking(&req);
        assert!(outcome.permanent);
        assert!(outcome
            .error
            .unwrap_or_default()
            .starts_with("invalid request"));
        assert!(server.received().is_empty());
    }

    #[test]
    fn validate_header_cases() {
        assert_eq!(validate_header("X-Api-Key", "abc 123"), Ok(()));
        assert_eq!(validate_header("authorization", "Bearer x"), Ok(()));
        assert_eq!(validate_header("user-agent", "custom/1"), Ok(()));
        let cases = [
            (
                "bad header",
                "x",
                "\"bad header\" is not a valid HTTP header name",
            ),
            ("", "x", "\"\" is not a valid HTTP header name"),
            (
                "Content-Type",
                "text/plain",
                "\"Content-Type\" is set by webhook_outbox",
            ),
            (
                "webhook-signature",
                "v1,x",
                "is set by webhook_outbox and cannot be overridden",
            ),
            ("Host", "evil.example", "\"Host\" is set by webhook_outbox"),
            ("transfer-encoding", "chunked", "is set by webhook_outbox"),
            ("x-note", "a\nb", "\"x-note\" has an invalid value"),
            ("x-note", "nul\0", "\"x-note\" has an invalid value"),
        ];
        for (name, value, want) in cases {
            let err = validate_header(name, value).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn prefix_text_is_safe_for_postgres_text() {
        assert_eq!(prefix_text(b"plain"), "plain");
        assert_eq!(prefix_text("ab\u{e9}".as_bytes()), "abé");
        assert_eq!(
            prefix_text(&"abé".as_bytes()[..3]),
            "ab",
            "cut character dropped"
        );
        assert_eq!(prefix_text(b"a\0b"), "a\u{FFFD}b");
        assert_eq!(prefix_text(b"a\xffb"), "a\u{FFFD}b");
    }

    #[test]
    fn client_config_errors_name_the_setting() {
        let bad_agent = HttpConfig {
            user_agent: "line\nbreak".into(),
            ..config("")
        };
        let err = Client::new(&bad_agent).unwrap_err();
        assert!(
            err.starts_with("webhook_outbox.user_agent \"line\\nbreak\""),
            "{err}"
        );

        let dir = std::env::temp_dir();
        let missing = dir.join("webhook_outbox-no-such-ca.pem");
        let no_certs = dir.join(format!(
            "webhook_outbox-no-certs-{}.pem",
            std::process::id()
        ));
        let bad_pem = dir.join(format!("webhook_outbox-bad-pem-{}.pem", std::process::id()));
        fs::write(&no_certs, "just text\n").expect("write");
        fs::write(
            &bad_pem,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let cases = [
            (&missing, "cannot read"),
            (&no_certs, "holds no \"BEGIN CERTIFICATE\" block"),
            (&bad_pem, "is not valid PEM"),
        ];
        for (path, want) in cases {
            let path = path.to_string_lossy().into_owned();
            let cfg = HttpConfig {
                ca_file: Some(path.clone()),
                ..config("")
            };
            let err = Client::new(&cfg).unwrap_err();
            assert!(
                err.starts_with(&format!("webhook_outbox.ca_file: \"{path}\""))
                    || err.contains(&path),
                "{err}"
            );
            assert!(err.contains(want), "{err}");
        }
        let _ = fs::remove_file(no_certs);
        let _ = fs::remove_file(bad_pem);
    }
}
