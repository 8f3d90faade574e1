//! The HTTP client of the delivery engine: one signed `POST` per attempt,
//! described as an [`Outcome`] that the settle step turns into sent/retry/dead.
//!
//! [`Client::send`] is a future: the engine runs every request in flight on
//! one tokio thread, so a request costs a few system calls on a ready socket
//! instead of a blocking thread's sleep and wake-up. Connections are HTTP/2
//! where the receiver offers it by ALPN, else HTTP/1.1 (hyper), kept alive in
//! a pool per scheme, host and port (see `connect`); one [`Client`] is
//! shared by all requests; rebuild it when [`HttpConfig`] changes. `send` never
//! panics and never follows a redirect. Every address connected to has passed
//! the SSRF guard, and the connection goes to exactly that address: no second
//! lookup can swap in one that was not checked (DNS rebinding).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, USER_AGENT,
};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use tokio_rustls::TlsConnector;

use super::connect::{DnsCache, Pool, PoolKey, Sender};
use super::headers::{is_reserved, truncate};
use super::policy::{validate_url, Cidr, Refusal, TargetUrl};
use super::retry_after::parse_retry_after;
use super::signature::{sign, SigningKey};
use super::tls;

/// The response body is read up to this many bytes; the rest is discarded
/// (the connection is then closed rather than drained).
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;
/// How much of a redirect's `Location` an error message quotes.
const MAX_LOCATION_BYTES: usize = 256;

/// How much of the response body is kept in [`Outcome::response_prefix`].
pub const RESPONSE_PREFIX_BYTES: usize = 1024;

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

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
    /// Offer `h2` by ALPN to https receivers; HTTP/1.1 only when false.
    pub http2: bool,
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
    /// The endpoint's keys: the current one first, then those of a rotation
    /// still in their overlap.
    pub signing_keys: Vec<SigningKey>,
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
            .field("signing_keys", &self.signing_keys.len())
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
    /// Why it failed, as a class; `None` for a 2xx response.
    pub failure: Option<FailureClass>,
    /// The address the request went to, once a connection was made.
    pub remote_addr: Option<SocketAddr>,
}

/// Why an attempt failed, as recorded in `attempts.failure_class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// No complete response within `http_timeout`.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// No connection: refused, unreachable, or not within `connect_timeout`.
    Connect,
    /// The TLS handshake failed: an untrusted or invalid certificate, say.
    Tls,
    /// Refused before sending: the URL or an address is not allowed (SSRF guard).
    Policy,
    /// The request could not be built (a bad stored header or secret).
    InvalidRequest,
    /// The connection broke before a complete response.
    Connection,
    /// The response was not valid HTTP.
    InvalidResponse,
    /// A response with a status other than 2xx (and not a redirect).
    HttpStatus,
    /// A 3xx response: redirects are never followed.
    Redirect,
    /// The response body could not be read to its end.
    ResponseBody,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::Dns => "dns",
            FailureClass::Connect => "connect",
            FailureClass::Tls => "tls",
            FailureClass::Policy => "policy",
            FailureClass::InvalidRequest => "invalid_request",
            FailureClass::Connection => "connection",
            FailureClass::InvalidResponse => "invalid_response",
            FailureClass::HttpStatus => "http_status",
            FailureClass::Redirect => "redirect",
            FailureClass::ResponseBody => "response_body",
        }
    }

    pub const ALL: [FailureClass; 11] = [
        FailureClass::Timeout,
        FailureClass::Dns,
        FailureClass::Connect,
        FailureClass::Tls,
        FailureClass::Policy,
        FailureClass::InvalidRequest,
        FailureClass::Connection,
        FailureClass::InvalidResponse,
        FailureClass::HttpStatus,
        FailureClass::Redirect,
        FailureClass::ResponseBody,
    ];

    /// The class of a response's status: none for a 2xx, `redirect` for a
    /// 3xx (never followed), else `http_status`.
    pub fn of_status(status: i32) -> Option<FailureClass> {
        match status {
            200..=299 => None,
            300..=399 => Some(FailureClass::Redirect),
            _ => Some(FailureClass::HttpStatus),
        }
    }

    /// The class of a result an external worker reports (record_attempt):
    /// the one it names, which only a failure has; else from its status, or
    /// `connection` for a failure without one.
    pub fn of_reported(
        status: Option<i32>,
        named: Option<&str>,
    ) -> Result<Option<FailureClass>, String> {
        let derived = status.map_or(Some(FailureClass::Connection), FailureClass::of_status);
        let Some(name) = named else {
            return Ok(derived);
        };
        let Some(class) = Self::ALL.into_iter().find(|c| c.as_str() == name) else {
            let known: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
            // Echoed back, but never more of it than a class name could be.
            let shown: String = name.chars().take(40).collect();
            let cut = if shown.len() < name.len() { "..." } else { "" };
            return Err(format!(
                "unknown failure_class \"{shown}{cut}\": use one of {}",
                known.join(", ")
            ));
        };
        match derived {
            None => Err(format!(
                "a {} response is a success: it has no failure_class",
                status.unwrap_or_default()
            )),
            Some(_) => Ok(Some(class)),
        }
    }
}

/// `Send + Sync`: share it behind an `Arc`. `send` must run inside a tokio
/// runtime (with timers), which also drives the pooled connections.
pub struct Client {
    pub(super) tls: TlsConnector,
    pub(super) allowed: Vec<Cidr>,
    allow_http: bool,
    pub(super) timeout: Duration,
    pub(super) connect_timeout: Duration,
    user_agent: Option<HeaderValue>,
    pub(super) max_idle_per_host: usize,
    pub(super) pool: Mutex<Pool>,
    pub(super) dns: Mutex<DnsCache>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Why an attempt got no response.
#[derive(Debug)]
pub(super) enum SendError {
    Refused(Refusal),
    InvalidRequest(String),
    Dns(String),
    ConnectTimeout,
    Connect(io::Error),
    Tls(io::Error),
    Http(hyper::Error),
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
        let tls = tls::connector(cfg.ca_file.as_deref().filter(|p| !p.is_empty()), cfg.http2)?;
        Ok(Client {
            tls,
            allowed: cfg.allowed_cidrs.clone(),
            allow_http: cfg.allow_http,
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            user_agent,
            max_idle_per_host: cfg.max_connections.max(1),
            pool: Mutex::default(),
            dns: Mutex::default(),
        })
    }

    /// Sends one attempt and describes what happened.
    pub async fn send(&self, req: &Request) -> Outcome {
        let started = Instant::now();
        // Where the request went, known once connected, even if it then times out.
        let peer = Mutex::new(None);
        let mut outcome = match validate_url(&req.url, self.allow_http) {
            Err(e) => failure(e.to_string(), true, FailureClass::Policy),
            Ok(target) => {
                match tokio::time::timeout(self.timeout, self.exchange(&target, req, &peer)).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => {
                        let (message, permanent, class) = self.explain(e);
                        failure(message, permanent, class)
                    }
                    Err(_) => failure(self.timed_out(), false, FailureClass::Timeout),
                }
            }
        };
        outcome.duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        outcome.remote_addr = *peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        outcome
    }

    fn timed_out(&self) -> String {
        format!("timeout: no complete response within {:?}", self.timeout)
    }

    async fn exchange(
        &self,
        target: &TargetUrl,
        req: &Request,
        peer: &Mutex<Option<SocketAddr>>,
    ) -> Result<Outcome, SendError> {
        let connected = |sender: &Sender| {
            *peer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender.peer());
        };
        let key: PoolKey = (target.scheme_https, target.host.clone(), target.port);
        // A pooled connection the server closed meanwhile fails before any
        // response: that request goes again, once, on a new connection.
        let response = match self.checkout(&key) {
            Some(mut sender) => {
                connected(&sender);
                match sender.send_request(self.build(target, req, &sender)?).await {
                    // Built again rather than cloned up front: the retry is rare, a
                    // clone of every request's headers would not be.
                    Err(e) if unprocessed(&e, &sender) => {
                        if sender.is_http2() {
                            self.evict(&key);
                        }
                        let mut fresh = self.open(target, &key).await?;
                        connected(&fresh);
                        let response = fresh.send_request(self.build(target, req, &fresh)?).await;
                        response.map(|r| (r, fresh))
                    }
                    other => other.map(|r| (r, sender)),
                }
            }
            None => {
                let mut sender = self.open(target, &key).await?;
                connected(&sender);
                sender
                    .send_request(self.build(target, req, &sender)?)
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
                // Only a connection whose response was read to its end can carry
                // the next request; an HTTP/2 one is shared from the moment it is made.
                if let (true, Sender::Http1(sender, peer)) = (complete, sender) {
                    self.checkin(key, sender, peer);
                }
                (prefix, None)
            }
            Err(e) => {
                let (message, _, _) = self.explain(SendError::Http(e));
                (None, Some(format!("reading response body: {message}")))
            }
        };
        // A redirect is one whatever its body; a body cut short fails even a 2xx.
        let failure = match FailureClass::of_status(status.as_u16().into()) {
            Some(FailureClass::Redirect) => Some(FailureClass::Redirect),
            _ if body_error.is_some() => Some(FailureClass::ResponseBody),
            class => class,
        };
        Ok(Outcome {
            status: Some(status.as_u16()),
            error: redirect.or(body_error),
            retry_after,
            response_prefix,
            failure,
            ..Outcome::default()
        })
    }

    /// The signed request: for HTTP/1.1 in origin form with the Host header as
    /// written; for HTTP/2 with the whole URL, which becomes the `:scheme`,
    /// `:authority` and `:path` pseudo-headers (Host is not sent there).
    fn build(
        &self,
        target: &TargetUrl,
        req: &Request,
        sender: &Sender,
    ) -> Result<http::Request<Full<Bytes>>, SendError> {
        let body = Bytes::from(req.body.clone());
        let signature = sign(&req.signing_keys, &req.webhook_id, req.timestamp, &body);
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
        let mut builder = http::Request::builder().method(Method::POST);
        builder = if sender.is_http2() {
            builder.uri(target.uri.clone())
        } else {
            builder.uri(path).header(HOST, authority)
        };
        let mut builder = builder
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

    /// The error's text, whether retrying cannot help, and its class.
    fn explain(&self, err: SendError) -> (String, bool, FailureClass) {
        let (message, class) = match err {
            SendError::Refused(refusal) => {
                return (refusal.to_string(), true, FailureClass::Policy)
            }
            SendError::InvalidRequest(e) => {
                return (
                    format!("invalid request: {e}"),
                    true,
                    FailureClass::InvalidRequest,
                )
            }
            SendError::Dns(e) => (format!("dns: {e}"), FailureClass::Dns),
            SendError::ConnectTimeout => (
                format!("timeout: no connection within {:?}", self.connect_timeout),
                FailureClass::Connect,
            ),
            SendError::Connect(e) => (self.io_message(&e).0, FailureClass::Connect),
            SendError::Tls(e) if e.kind() == io::ErrorKind::InvalidData => {
                (format!("tls: {e}"), FailureClass::Tls)
            }
            SendError::Tls(e) => (self.io_message(&e).0, FailureClass::Tls),
            SendError::Http(e) => {
                let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>());
                match io {
                    Some(io) => self.io_message(io),
                    None if e.is_incomplete_message() || e.is_canceled() || e.is_closed() => (
                        "connection closed before a complete response".to_owned(),
                        FailureClass::Connection,
                    ),
                    None if e.is_parse() || e.is_parse_status() => (
                        format!("invalid HTTP response: {e}"),
                        FailureClass::InvalidResponse,
                    ),
                    None if e.is_timeout() => (self.timed_out(), FailureClass::Timeout),
                    None => (format!("network error: {e}"), FailureClass::Connection),
                }
            }
        };
        (message, false, class)
    }

    fn io_message(&self, e: &io::Error) -> (String, FailureClass) {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => {
                ("connection refused".to_owned(), FailureClass::Connect)
            }
            io::ErrorKind::ConnectionReset => (
                "connection reset by peer".to_owned(),
                FailureClass::Connection,
            ),
            io::ErrorKind::UnexpectedEof => (
                "connection closed before a complete response".to_owned(),
                FailureClass::Connection,
            ),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                (self.timed_out(), FailureClass::Timeout)
            }
            _ => (format!("network error: {e}"), FailureClass::Connection),
        }
    }
}

/// Whether a request that failed on a pooled connection can go again on a
/// new one: the server cannot have processed it. Over HTTP/1.1, a kept-alive
/// connection the server closed meanwhile. Over HTTP/2, a stream the server
/// refused, or one above the last it promised to process when it said
/// GOAWAY (what nginx does after keepalive_requests); not a stream cut off
/// when its connection died, which the server may have processed.
fn unprocessed(e: &hyper::Error, sender: &Sender) -> bool {
    if e.is_canceled() {
        return true;
    }
    if !sender.is_http2() {
        return e.is_incomplete_message() || sender.is_closed();
    }
    let h2 = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>());
    h2.is_some_and(|h2| {
        h2.reason() == Some(h2::Reason::REFUSED_STREAM)
            || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
    })
}

fn failure(message: String, permanent: bool, class: FailureClass) -> Outcome {
    Outcome {
        error: Some(message),
        permanent,
        failure: Some(class),
        ..Outcome::default()
    }
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
pub(super) mod tests {
    use super::*;

    #[test]
    fn reported_failure_classes() {
        assert_eq!(FailureClass::of_reported(Some(204), None), Ok(None));
        assert_eq!(
            FailureClass::of_reported(Some(503), None),
            Ok(Some(FailureClass::HttpStatus))
        );
        assert_eq!(
            FailureClass::of_reported(Some(302), None),
            Ok(Some(FailureClass::Redirect))
        );
        assert_eq!(
            FailureClass::of_reported(None, None),
            Ok(Some(FailureClass::Connection))
        );
        // Every class is named as it is recorded.
        for class in FailureClass::ALL {
            assert_eq!(
                FailureClass::of_reported(None, Some(class.as_str())),
                Ok(Some(class))
            );
        }
        let unknown = FailureClass::of_reported(None, Some("Timeout")).unwrap_err();
        assert!(
            unknown.starts_with("unknown failure_class \"Timeout\": use one of timeout, dns,"),
            "{unknown}"
        );
        let long = FailureClass::of_reported(None, Some(&"x".repeat(100_000))).unwrap_err();
        let shown = format!("unknown failure_class \"{}...\": use", "x".repeat(40));
        assert!(long.starts_with(&shown), "{long}");
        assert_eq!(
            FailureClass::of_reported(Some(200), Some("timeout")),
            Err("a 200 response is a success: it has no failure_class".to_owned())
        );
    }
    use crate::delivery::policy::parse_cidrs;
    use crate::delivery::signature::tests::reference_signature;
    use crate::delivery::test_server::{response, serve};
    use std::fs;
    use std::net::TcpListener;

    pub(in crate::delivery) fn config(allowed: &str) -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            user_agent: "webhook_outbox-test/1".into(),
            ca_file: None,
            allowed_cidrs: parse_cidrs(allowed).expect("test CIDRs"),
            allow_http: true,
            http2: true,
            max_connections: 8,
        }
    }

    pub(in crate::delivery) fn loopback_client() -> Client {
        Client::new(&config("127.0.0.0/8")).expect("client")
    }

    pub(in crate::delivery) fn request(url: String) -> Request {
        Request {
            url,
            webhook_id: "msg_2Zx8bWkQ".into(),
            timestamp: 1_700_000_000,
            body: r#"{"type":"invoice.paid","data":{"id":42, "note":"ünï"}}"#.into(),
            headers: vec![],
            signing_keys: vec![SigningKey::Hmac(vec![7; 24].into())],
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
        assert_eq!(outcome.failure, None);
        assert_eq!(
            outcome.remote_addr,
            Some(server.addr),
            "the address connected to"
        );
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
        let expected = reference_signature(&[7; 24], "msg_2Zx8bWkQ", "1700000000", &seen.body);
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
        assert_eq!(outcome.failure, Some(FailureClass::HttpStatus));
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
        assert_eq!(outcome.failure, Some(FailureClass::Redirect));
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
        assert_eq!(outcome.failure, Some(FailureClass::Timeout));
        assert_eq!(
            outcome.remote_addr,
            Some(server.addr),
            "known before the timeout"
        );
        assert!(
            (250..3000).contains(&outcome.duration_ms),
            "{}",
            outcome.duration_ms
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
        assert_eq!(outcome.failure, Some(FailureClass::Policy));
        assert!(listener.accept().is_err(), "no connection may be made");
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
