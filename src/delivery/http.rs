//! The HTTP client of the delivery threads: one signed `POST` per attempt,
//! described as an [`Outcome`] that the settle step turns into sent/retry/dead.
//!
//! One [`Client`] (one ureq `Agent`, one keep-alive pool) is shared by all
//! delivery threads; rebuild it when [`HttpConfig`] changes. `send` never
//! panics and never follows a redirect. Every address it connects to has been
//! checked by the SSRF guard in the resolver below, and ureq connects to exactly
//! the addresses the resolver returns.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use std::{fmt, fs, thread};

use ureq::config::Config;
use ureq::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use ureq::http::Uri;
use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{ArrayVec, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Agent, Body, Timeout};

use super::policy::{check_ip, validate_url, Cidr, Refusal};
use super::signature::sign;

/// The response body is read up to this many bytes; the rest is discarded
/// (the connection is then closed rather than drained).
pub const RESPONSE_BODY_CAP: u64 = 64 * 1024;
/// How much of the response body is kept in [`Outcome::response_prefix`].
pub const RESPONSE_PREFIX_BYTES: u64 = 1024;

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

/// How long a host name's resolved addresses are reused. ureq resolves before
/// every request, even one that reuses a pooled connection; without this a
/// named endpoint would cost a getaddrinfo (often a DNS round trip) per
/// delivery. Cached addresses are checked on every use like fresh ones.
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
    /// Idle keep-alive connections kept, in total and per host; size it to the
    /// number of requests in flight.
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

/// Thread-safe (`Send + Sync`): share it behind an `Arc`.
pub struct Client {
    agent: Agent,
    allow_http: bool,
    timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
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

impl Client {
    pub fn new(cfg: &HttpConfig) -> Result<Client, String> {
        // ureq unwraps the user agent into a header value on every request.
        if HeaderValue::from_str(&cfg.user_agent).is_err() {
            return Err(format!(
                "webhook_outbox.user_agent \"{}\" is not a valid header value",
                cfg.user_agent.escape_debug()
            ));
        }
        let tls = TlsConfig::builder()
            .root_certs(root_certs(
                cfg.ca_file.as_deref().filter(|p| !p.is_empty()),
            )?)
            .build();
        let pool = cfg.max_connections.max(1);
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // A proxy from the environment would resolve the host itself,
            // around the SSRF guard.
            .proxy(None)
            .user_agent(cfg.user_agent.as_str())
            .timeout_global(Some(cfg.timeout))
            .timeout_connect(Some(cfg.connect_timeout))
            .max_idle_connections(pool)
            .max_idle_connections_per_host(pool)
            .tls_config(tls)
            .build();
        let resolver = GuardedResolver {
            allowed: cfg.allowed_cidrs.clone(),
            cache: Mutex::default(),
        };
        Ok(Client {
            agent: Agent::with_parts(config, DefaultConnector::default(), resolver),
            allow_http: cfg.allow_http,
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
        })
    }

    /// Sends one attempt and describes what happened.
    pub fn send(&self, req: &Request) -> Outcome {
        let started = Instant::now();
        let mut outcome = match validate_url(&req.url, self.allow_http) {
            Err(e) => failure(e.to_string(), true),
            Ok(target) => {
                let https = target.scheme_https;
                self.exchange(target.uri, https, req).unwrap_or_else(|e| {
                    let (message, permanent) = self.explain(&e, https);
                    failure(message, permanent)
                })
            }
        };
        outcome.duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        outcome
    }

    /// Closes every connection, interrupting sends in flight on other threads
    /// (they return an error outcome at once); later sends fail. For a prompt
    /// stop: interrupted attempts should not be recorded as endpoint failures.
    pub fn shutdown(&self) {
        self.agent.clone().shutdown();
    }

    fn exchange(&self, uri: Uri, https: bool, req: &Request) -> Result<Outcome, ureq::Error> {
        let body = req.body.as_bytes();
        let signature = sign(&req.signing_key, &req.webhook_id, req.timestamp, body);
        let mut builder = self
            .agent
            .post(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(WEBHOOK_ID, req.webhook_id.as_str())
            .header(WEBHOOK_TIMESTAMP, req.timestamp)
            .header(WEBHOOK_SIGNATURE, signature);
        for (name, value) in req.headers.iter().filter(|(name, _)| !is_reserved(name)) {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut response = builder.send(body)?;

        let status = response.status().as_u16();
        let header_text = |name: HeaderName| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let redirect = (300..400).contains(&status).then(|| {
            let location = header_text(LOCATION).unwrap_or_else(|| "nowhere".to_owned());
            format!("redirect not followed (status {status} to {location})")
        });
        let retry_after = match status {
            429 | 503 => {
                header_text(RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()))
            }
            _ => None,
        };
        let (response_prefix, body_error) = match read_prefix(response.body_mut()) {
            Ok(prefix) => (prefix, None),
            Err(e) => (
                None,
                Some(format!(
                    "reading response body: {}",
                    self.explain(&e, https).0
                )),
            ),
        };
        Ok(Outcome {
            status: Some(status),
            error: redirect.or(body_error),
            retry_after,
            response_prefix,
            ..Outcome::default()
        })
    }

    /// A message for `last_error`, and whether retrying is pointless.
    fn explain(&self, err: &ureq::Error, https: bool) -> (String, bool) {
        use ureq::Error as E;
        let message = match err {
            E::Other(inner) => match inner.downcast_ref::<Refusal>() {
                Some(refusal) => return (refusal.to_string(), true),
                None => inner.to_string(),
            },
            E::Http(e) => return (format!("invalid request: {e}"), true),
            E::BadUri(e) => return (format!("invalid URL: {e}"), true),
            E::Timeout(Timeout::Connect) => {
                format!("timeout: no connection within {:?}", self.connect_timeout)
            }
            E::Timeout(phase) => {
                format!(
                    "timeout: no complete response within {:?} ({phase})",
                    self.timeout
                )
            }
            E::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                io::ErrorKind::ConnectionReset => "connection reset by peer".to_owned(),
                io::ErrorKind::UnexpectedEof => {
                    "connection closed before a complete response".to_owned()
                }
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    format!("timeout: no complete response within {:?}", self.timeout)
                }
                // rustls reports handshake and certificate failures this way.
                io::ErrorKind::InvalidData if https => format!("tls: {e}"),
                _ => format!("network error: {e}"),
            },
            E::Rustls(e) => format!("tls: {e}"),
            E::Tls(e) => format!("tls: {e}"),
            E::HostNotFound => "dns: host not found".to_owned(),
            E::Protocol(e) => format!("invalid HTTP response: {e}"),
            other => other.to_string(),
        };
        (message, false)
    }
}

fn failure(message: String, permanent: bool) -> Outcome {
    Outcome {
        error: Some(message),
        permanent,
        ..Outcome::default()
    }
}

/// Webpki's roots plus those of `ca_file`.
fn root_certs(ca_file: Option<&str>) -> Result<RootCerts, String> {
    let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()))
        .collect();
    if let Some(path) = ca_file {
        let pem = fs::read(path)
            .map_err(|e| format!("webhook_outbox.ca_file: cannot read \"{path}\": {e}"))?;
        let before = roots.len();
        for item in parse_pem(&pem) {
            let item = item
                .map_err(|e| format!("webhook_outbox.ca_file: \"{path}\" is not valid PEM: {e}"))?;
            if let PemItem::Certificate(cert) = item {
                roots.push(cert);
            }
        }
        if roots.len() == before {
            return Err(format!(
                "webhook_outbox.ca_file: \"{path}\" holds no \"BEGIN CERTIFICATE\" block"
            ));
        }
    }
    Ok(RootCerts::from(roots))
}

/// Reads at most [`RESPONSE_BODY_CAP`] bytes, keeping the first
/// [`RESPONSE_PREFIX_BYTES`]. A body read to its end lets ureq pool the
/// connection again.
fn read_prefix(body: &mut Body) -> Result<Option<String>, ureq::Error> {
    let mut reader = body.as_reader().take(RESPONSE_BODY_CAP);
    let mut prefix = Vec::new();
    (&mut reader)
        .take(RESPONSE_PREFIX_BYTES)
        .read_to_end(&mut prefix)
        .and_then(|_| io::copy(&mut reader, &mut io::sink()))
        .map_err(ureq::Error::from)?;
    Ok((!prefix.is_empty()).then(|| prefix_text(&prefix)))
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

/// Resolves hosts for ureq and returns only the addresses the SSRF policy
/// allows. ureq connects to exactly these, so a second DNS answer (rebinding)
/// can never swap in an address that was not checked.
#[derive(Debug)]
struct GuardedResolver {
    allowed: Vec<Cidr>,
    cache: Mutex<DnsCache>,
}

/// Host name → when it was resolved, and to what.
type DnsCache = HashMap<Box<str>, (Instant, Arc<[IpAddr]>)>;

/// A failed lookup, with the host it was for.
#[derive(Debug)]
struct DnsError(String);

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns: {}", self.0)
    }
}

impl std::error::Error for DnsError {}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = uri
            .authority()
            .ok_or_else(|| ureq::Error::BadUri(format!("{uri} has no host")))?;
        let https = uri.scheme_str() == Some("https");
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority.host();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);

        let literal = bare.parse::<IpAddr>().ok();
        let looked_up;
        let candidates: &[IpAddr] = match &literal {
            Some(ip) => std::slice::from_ref(ip),
            None => {
                looked_up = self.lookup(bare, &timeout)?;
                &looked_up
            }
        };

        let mut addrs = self.empty();
        let mut refused = None;
        for &ip in candidates {
            match check_ip(ip, &self.allowed) {
                Ok(()) if addrs.len() < capacity(&addrs) => addrs.push(SocketAddr::new(ip, port)),
                Ok(()) => {}
                Err(refusal) => {
                    refused.get_or_insert(refusal);
                }
            }
        }
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        Err(match refused {
            Some(refusal) => ureq::Error::Other(Box::new(Refusal {
                host: literal.is_none().then(|| bare.to_owned()),
                ..refusal
            })),
            None => ureq::Error::HostNotFound,
        })
    }
}

fn capacity<T, const N: usize>(_: &ArrayVec<T, N>) -> usize {
    N
}

impl GuardedResolver {
    /// The host's addresses, from the cache or from getaddrinfo.
    fn lookup(&self, host: &str, timeout: &NextTimeout) -> Result<Arc<[IpAddr]>, ureq::Error> {
        let cache = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, ips)) = cache().get(host) {
            if at.elapsed() < DNS_CACHE_TTL {
                return Ok(ips.clone());
            }
        }
        let ips = resolve_with_timeout(host, timeout)?;
        let mut cache = cache();
        if cache.len() >= DNS_CACHE_SOFT_LIMIT {
            cache.retain(|_, (at, _)| at.elapsed() < DNS_CACHE_TTL);
        }
        cache.insert(host.into(), (Instant::now(), ips.clone()));
        Ok(ips)
    }
}

/// getaddrinfo on a helper thread, so a hanging DNS server costs at most the
/// attempt's remaining time (getaddrinfo itself has no timeout). Only cache
/// misses get here.
fn resolve_with_timeout(host: &str, timeout: &NextTimeout) -> Result<Arc<[IpAddr]>, ureq::Error> {
    let (tx, rx) = mpsc::sync_channel(1);
    let name = host.to_owned();
    thread::Builder::new()
        .name("webhook-dns".into())
        .spawn(move || {
            let result = (name.as_str(), 0).to_socket_addrs();
            let _ = tx.send(result.map(|addrs| addrs.map(|a| a.ip()).collect::<Arc<[IpAddr]>>()));
        })
        .map_err(ureq::Error::Io)?;
    match rx.recv_timeout(*timeout.after) {
        Ok(Ok(ips)) if !ips.is_empty() => Ok(ips),
        Ok(Ok(_)) => Err(ureq::Error::HostNotFound),
        Ok(Err(e)) => Err(ureq::Error::Other(Box::new(DnsError(format!(
            "cannot resolve {host}: {e}"
        ))))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ureq::Error::Timeout(timeout.reason)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ureq::Error::HostNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::policy::parse_cidrs;
    use crate::delivery::signature::tests::reference_signature;
    use crate::delivery::test_server::{response, serve};
    use std::net::TcpListener;

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
        let outcome = loopback_client().send(&request(server.url("/hook")));
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
        let outcome = loopback_client().send(&req);
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
        let outcome = loopback_client().send(&request(server.url("/")));
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
            let outcome = client.send(&request(server.url("/")));
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
        let outcome = loopback_client().send(&request(server.url("/old")));
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
            let outcome = loopback_client().send(&request(server.url("/")));
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
            .send(&request(server.url("/")));
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
        let outcome = Client::new(&cfg).expect("client").send(&request(url));
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
        let outcome = loopback_client().send(&request(format!("http://127.0.0.1:{port}/")));
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
            let outcome = client.send(&request(format!("http://{host}:{port}/")));
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
            let outcome = client.send(&request(format!(
                "http://localhost:{}/",
                server.addr.port()
            )));
            assert_eq!((outcome.status, outcome.error), (Some(200), None));
        }
        let outcome = client.send(&request(format!(
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
        let outcome = Client::new(&cfg).expect("client").send(&request(url));
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
            let outcome = client.send(&request(server.url("/")));
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
    fn threads_share_one_client_and_its_pool() {
        let server = serve(|_| Some(response(200, &[], b"ok")));
        let client = Arc::new(loopback_client());
        let url = server.url("/");
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                thread::spawn(move || {
                    (0..50).all(|_| client.send(&request(url.clone())).status == Some(200))
                })
            })
            .collect();
        for worker in workers {
            assert!(worker.join().expect("worker thread"), "every send succeeds");
        }
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
        let outcome = loopback_client().send(&req);
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
    fn shutdown_interrupts_sends_in_flight() {
        let server = serve(|_| None);
        let cfg = HttpConfig {
            timeout: Duration::from_secs(30),
            ..config("127.0.0.0/8")
        };
        let client = Arc::new(Client::new(&cfg).expect("client"));
        let sender = {
            let (client, url) = (client.clone(), server.url("/"));
            thread::spawn(move || client.send(&request(url)))
        };
        server.next_request();
        client.shutdown();
        let outcome = sender.join().expect("sender thread");
        assert_eq!(outcome.status, None);
        assert!(outcome.error.is_some());
        assert!(outcome.duration_ms < 5000, "{}", outcome.duration_ms);
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
