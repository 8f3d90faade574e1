//! Which URLs an endpoint may have, and which addresses a delivery may reach.
//!
//! Two checks, both pure functions:
//! - [`validate_url`] runs when an endpoint is created and again before each send
//!   (the stored URL may predate a change of `webhook_outbox.allow_http`).
//! - [`check_ip`] runs on every address the host resolves to, right before the
//!   connection is made to that very address (see `connect.rs`). Classifying the
//!   resolved address, not the host text, is what makes disguises such as `127.1`,
//!   `2130706433` or a DNS name pointing at 10.0.0.5 harmless.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::Uri;

/// A webhook URL that passed [`validate_url`].
#[derive(Debug, Clone)]
pub struct TargetUrl {
    pub scheme_https: bool,
    /// Host as written, without the brackets of an IPv6 literal.
    pub host: String,
    /// Explicit port, or 443/80 from the scheme.
    pub port: u16,
    /// The parsed form handed to the HTTP client, so that what was checked is
    /// exactly what is requested.
    pub(super) uri: Uri,
}

/// Why a webhook URL is refused. Messages never echo credentials, nor a
/// path, query or fragment (webhook URLs often carry a token there, and an
/// ERROR's message reaches the server log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    Empty,
    /// Whitespace, a control character or a non-ASCII character, at a byte offset.
    BadChar {
        ch: char,
        at: usize,
    },
    Fragment,
    Malformed {
        url: String,
        reason: String,
    },
    MissingScheme(String),
    UnsupportedScheme(String),
    MissingHost(String),
    BadHost(String),
    Credentials,
    BadPort(String),
    HttpNotAllowed,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Empty => f.write_str("webhook URL is empty"),
            UrlError::BadChar { ch: ' ', at } => write!(
                f,
                "webhook URL contains a space at byte {at}; remove it or percent-encode it"
            ),
            UrlError::BadChar { ch, at } if ch.is_ascii() => write!(
                f,
                "webhook URL contains control character U+{:04X} at byte {at}; \
                 remove it or percent-encode it",
                u32::from(*ch)
            ),
            UrlError::BadChar { ch, at } => write!(
                f,
                "webhook URL contains non-ASCII character {ch:?} at byte {at}; \
                 write the host in its xn-- (punycode) form and percent-encode the path"
            ),
            UrlError::Fragment => f.write_str(
                "webhook URL has a fragment (#…), which is never sent to the receiver; remove it",
            ),
            UrlError::Malformed { url, reason } => {
                write!(f, "webhook URL \"{url}\" is malformed: {reason}")
            }
            UrlError::MissingScheme(url) => {
                write!(
                    f,
                    "webhook URL \"{url}\" has no scheme; write it as https://…"
                )
            }
            UrlError::UnsupportedScheme(scheme) => write!(
                f,
                "webhook URL scheme \"{scheme}\" is not supported; use https \
                 (or http with webhook_outbox.allow_http on)"
            ),
            UrlError::MissingHost(url) => write!(f, "webhook URL \"{url}\" has no host"),
            UrlError::BadHost(host) => {
                write!(f, "webhook URL host \"{host}\" is not a valid IPv6 address")
            }
            UrlError::Credentials => f.write_str(
                "webhook URL must not contain credentials (user:password@); \
                 pass them in the endpoint's headers instead, e.g. an authorization header",
            ),
            UrlError::BadPort(port) => {
                write!(
                    f,
                    "webhook URL port \"{port}\" is not a number from 1 to 65535"
                )
            }
            UrlError::HttpNotAllowed => f.write_str(
                "http URLs are refused while webhook_outbox.allow_http is off; use https",
            ),
        }
    }
}

impl std::error::Error for UrlError {}

/// Checks that `url` is an absolute http(s) URL the worker may call.
///
/// Stricter than the HTTP parser underneath: a fragment, an empty or out-of-range
/// port, an empty host and credentials are errors rather than silently dropped or
/// forwarded.
pub fn validate_url(url: &str, allow_http: bool) -> Result<TargetUrl, UrlError> {
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    if let Some((at, ch)) = url
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(UrlError::BadChar { ch, at });
    }
    if url.contains('#') {
        return Err(UrlError::Fragment);
    }
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| UrlError::Malformed {
            url: redacted(url),
            reason: e.to_string(),
        })?;
    let scheme_https = match uri.scheme_str() {
        None => return Err(UrlError::MissingScheme(redacted(url))),
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) => return Err(UrlError::UnsupportedScheme(s.to_owned())),
    };
    let Some(authority) = uri.authority() else {
        return Err(UrlError::MissingHost(redacted(url)));
    };
    if authority.as_str().contains('@') {
        return Err(UrlError::Credentials);
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(UrlError::MissingHost(redacted(url)));
    }
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) if inner.parse::<Ipv6Addr>().is_ok() => inner,
        Some(_) => return Err(UrlError::BadHost(host.to_owned())),
        None => host,
    };
    // The parser keeps an unparsable port as text and reports it as absent.
    let after_host = authority
        .as_str()
        .get(authority.host().len()..)
        .unwrap_or("");
    let port = match after_host.strip_prefix(':') {
        None => {
            if scheme_https {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(UrlError::BadPort(p.to_owned())),
        },
    };
    if !scheme_https && !allow_http {
        return Err(UrlError::HttpNotAllowed);
    }
    Ok(TargetUrl {
        scheme_https,
        host: host.to_owned(),
        port,
        uri,
    })
}

/// `url` for an error message, with anything before an `@` in the authority
/// (a password, typically) masked.
fn redacted(url: &str) -> String {
    // A scheme separator only counts before the first path, query or
    // fragment character ("host/x?next=https://…" has none).
    let first_delimiter = url.find(['/', '?', '#']).unwrap_or(url.len());
    let start = url
        .find("://")
        .filter(|&i| i <= first_delimiter)
        .map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let rest = if end < url.len() { "/…" } else { "" };
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}{rest}", &url[..start], &url[start + at..end]),
        None => format!("{}{rest}", &url[..end]),
    }
}

/// An IPv4 or IPv6 network, as in `webhook_outbox.allowed_cidrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            len,
        }
    }

    const fn v6(segments: [u16; 8], len: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            len,
        }
    }

    /// True when `ip` is inside this network. Families never match each other.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && network(ip, self.len) == self.addr
    }
}

/// `ip` with every bit after the first `len` cleared.
fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `::1/128`, or a bare address meaning that one host.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("\"{s}\" is not a CIDR: \"{addr_text}\" is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                    "\"{s}\" is not a CIDR: prefix length \"{l}\" must be a number from 0 to {max}"
                ))
                }
            },
        };
        // Like Postgres' cidr type: a set host bit is almost always a typo.
        let net = network(addr, len);
        if net != addr {
            return Err(format!(
                "\"{s}\" has bits set to the right of the prefix; did you mean {net}/{len}?"
            ));
        }
        Ok(Cidr { addr, len })
    }
}

/// Parses a list of networks separated by commas and/or whitespace. Empty input
/// is an empty list. The error quotes the first bad entry; the caller names the
/// setting it came from.
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(str::parse)
        .collect()
}

/// The reason an address is not public. `Display` gives the stable snake_case
/// name used in error messages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Loopback,
    Private,
    Cgnat,
    LinkLocal,
    Multicast,
    Unspecified,
    Broadcast,
    UniqueLocal,
    SiteLocal,
    Documentation,
    Benchmarking,
    Reserved,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Loopback => "loopback",
            Rule::Private => "private",
            Rule::Cgnat => "cgnat",
            Rule::LinkLocal => "link_local",
            Rule::Multicast => "multicast",
            Rule::Unspecified => "unspecified",
            Rule::Broadcast => "broadcast",
            Rule::UniqueLocal => "unique_local",
            Rule::SiteLocal => "site_local",
            Rule::Documentation => "documentation",
            Rule::Benchmarking => "benchmarking",
            Rule::Reserved => "reserved",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Rule::Loopback => "loopback",
            Rule::Private => "a private network address",
            Rule::Cgnat => "carrier-grade NAT shared space",
            Rule::LinkLocal => "link-local (where cloud metadata services live)",
            Rule::Multicast => "multicast",
            Rule::Unspecified => "the unspecified (this-host) address",
            Rule::Broadcast => "the broadcast address",
            Rule::UniqueLocal => "an IPv6 unique local (private) address",
            Rule::SiteLocal => "an IPv6 site-local address",
            Rule::Documentation => "reserved for documentation",
            Rule::Benchmarking => "reserved for benchmarking",
            Rule::Reserved => "reserved, not globally routable",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IPv4 blocks that are not public (IANA special-purpose registry), disjoint
/// except where the more specific block comes first.
const V4_RULES: &[(Cidr, Rule)] = &[
    (Cidr::v4(0, 0, 0, 0, 8), Rule::Unspecified), // Linux connects 0.x to this host
    (Cidr::v4(10, 0, 0, 0, 8), Rule::Private),
    (Cidr::v4(100, 64, 0, 0, 10), Rule::Cgnat),
    (Cidr::v4(127, 0, 0, 0, 8), Rule::Loopback),
    (Cidr::v4(169, 254, 0, 0, 16), Rule::LinkLocal),
    (Cidr::v4(172, 16, 0, 0, 12), Rule::Private),
    (Cidr::v4(192, 0, 0, 0, 24), Rule::Reserved), // IETF protocol assignments
    (Cidr::v4(192, 0, 2, 0, 24), Rule::Documentation),
    (Cidr::v4(192, 168, 0, 0, 16), Rule::Private),
    (Cidr::v4(198, 18, 0, 0, 15), Rule::Benchmarking),
    (Cidr::v4(198, 51, 100, 0, 24), Rule::Documentation),
    (Cidr::v4(203, 0, 113, 0, 24), Rule::Documentation),
    (Cidr::v4(224, 0, 0, 0, 4), Rule::Multicast),
    (Cidr::v4(255, 255, 255, 255, 32), Rule::Broadcast),
    (Cidr::v4(240, 0, 0, 0, 4), Rule::Reserved),
];

/// IPv6 blocks that are not public. Anything outside 2000::/3 (global unicast)
/// and not listed here is [`Rule::Reserved`].
const V6_RULES: &[(Cidr, Rule)] = &[
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Rule::Unspecified),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Rule::Loopback),
    (
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        Rule::Private,
    ), // local-use NAT64
    (
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        Rule::UniqueLocal,
    ),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Rule::LinkLocal),
    (Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Rule::SiteLocal),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Rule::Multicast),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Rule::Documentation,
    ),
    (
        Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        Rule::Documentation,
    ),
    (
        Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        Rule::Benchmarking,
    ),
    (Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Rule::Reserved), // IETF assignments, Teredo
];

const GLOBAL_UNICAST_V6: Cidr = Cidr::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const NAT64_V6: Cidr = Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR_V6: Cidr = Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// The IPv4 address an IPv6 address carries and is delivered to: IPv4-mapped
/// (::ffff:a.b.c.d, the kernel connects over IPv4), NAT64 (64:ff9b::a.b.c.d, the
/// translator connects) and 6to4 (2002:AABB:CCDD::, the relay tunnels there).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let bits = ip.to_bits();
    if NAT64_V6.contains(IpAddr::V6(ip)) {
        Some(Ipv4Addr::from_bits(bits as u32))
    } else if SIX_TO_FOUR_V6.contains(IpAddr::V6(ip)) {
        Some(Ipv4Addr::from_bits((bits >> 80) as u32))
    } else {
        None
    }
}

fn first_match(table: &[(Cidr, Rule)], ip: IpAddr) -> Option<Rule> {
    table
        .iter()
        .find(|(cidr, _)| cidr.contains(ip))
        .map(|&(_, rule)| rule)
}

/// Why `ip` must not be reached from the database server, or `None` when it is
/// a public address.
pub fn classify(ip: IpAddr) -> Option<Rule> {
    match ip {
        IpAddr::V4(_) => first_match(V4_RULES, ip),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => first_match(V4_RULES, IpAddr::V4(v4)),
            None => first_match(V6_RULES, ip)
                .or_else(|| (!GLOBAL_UNICAST_V6.contains(ip)).then_some(Rule::Reserved)),
        },
    }
}

/// A destination refused by the SSRF guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub ip: IpAddr,
    pub rule: Rule,
    /// The host name that resolved to `ip`, when the URL did not name `ip` itself.
    pub host: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refusal { ip, rule, host } = self;
        f.write_str("refused by SSRF guard: ")?;
        match host {
            Some(host) => write!(f, "{host} resolves to {ip}, which is")?,
            None => write!(f, "{ip} is")?,
        }
        write!(
            f,
            " {} (rule {rule}); add it to webhook_outbox.allowed_cidrs to allow",
            rule.description()
        )
    }
}

impl std::error::Error for Refusal {}

/// Allows public addresses and addresses inside `allowed`; refuses the rest.
/// An IPv4-mapped IPv6 address is also allowed by a network holding its IPv4
/// form, since the kernel connects to that IPv4 address.
pub fn check_ip(ip: IpAddr, allowed: &[Cidr]) -> Result<(), Refusal> {
    let Some(rule) = classify(ip) else {
        return Ok(());
    };
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    let is_allowed = |candidate: IpAddr| allowed.iter().any(|c| c.contains(candidate));
    if is_allowed(ip) || mapped.is_some_and(is_allowed) {
        Ok(())
    } else {
        Err(Refusal {
            ip,
            rule,
            host: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, ToSocketAddrs};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    #[test]
    fn classify_ipv4_edges() {
        use Rule::*;
        let cases: &[(&str, Option<Rule>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.255", Some(Unspecified)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(Loopback)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some(Reserved)),
            ("192.0.0.255", Some(Reserved)),
            ("192.0.1.0", None),
            ("192.0.1.255", None),
            ("192.0.2.0", Some(Documentation)),
            ("192.0.2.255", Some(Documentation)),
            ("192.0.3.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some(Documentation)),
            ("198.51.100.255", Some(Documentation)),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some(Documentation)),
            ("203.0.113.255", Some(Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
        ];
        for &(addr, want) in cases {
            assert_eq!(classify(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn classify_ipv6_edges() {
        use Rule::*;
        let cases: &[(&str, Option<Rule>)] = &[
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(Reserved)),
            ("::127.0.0.1", Some(Reserved)), // deprecated IPv4-compatible form
            ("::fffe:ffff:ffff", Some(Reserved)),
            // IPv4-mapped: the embedded address decides.
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:100.64.0.1", Some(Cgnat)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            ("::ffff:8.8.8.8", None),
            ("::1:0:0:0", Some(Reserved)),
            // NAT64 well-known prefix: the embedded address decides.
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::a00:1", Some(Private)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::808:808", None),
            ("64:ff9b::1:0:0", Some(Reserved)), // just past the /96
            ("64:ff9b:1::", Some(Private)),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(Private)),
            ("64:ff9b:2::", Some(Reserved)),
            ("100::", Some(Reserved)), // discard-only
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("2000::", None),
            ("2001::", Some(Reserved)), // Teredo
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("2001:200::", None),
            ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("2001:2::", Some(Benchmarking)),
            ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some(Benchmarking)),
            ("2001:2:1::", Some(Reserved)),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some(Documentation)),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("2001:db9::", None),
            // 6to4: the embedded address decides.
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:c0a8:101::1", Some(Private)),
            ("2002:808:808::", None),
            ("2001:4860:4860::8888", None),
            ("2606:4700:4700::1111", None),
            ("3ffe::", None),
            ("3fff::", Some(Documentation)),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation),
            ),
            ("3fff:1000::", None),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("4000::", Some(Reserved)),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("fc00::", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
            ("fe00::", Some(Reserved)),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Reserved)),
            ("fe80::", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::", Some(SiteLocal)),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(SiteLocal)),
            ("ff00::", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast)),
        ];
        for &(addr, want) in cases {
            assert_eq!(classify(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn rule_tables_hold_networks() {
        for (cidr, rule) in V4_RULES.iter().chain(V6_RULES) {
            assert_eq!(network(cidr.addr, cidr.len), cidr.addr, "{cidr} ({rule})");
            assert_eq!(cidr.to_string().parse::<Cidr>().as_ref(), Ok(cidr));
        }
    }

    #[test]
    fn rule_names_are_stable() {
        use Rule::*;
        let names: Vec<String> = [
            Loopback,
            Private,
            Cgnat,
            LinkLocal,
            Multicast,
            Unspecified,
            Broadcast,
            UniqueLocal,
            SiteLocal,
            Documentation,
            Benchmarking,
            Reserved,
        ]
        .iter()
        .map(Rule::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "loopback",
                "private",
                "cgnat",
                "link_local",
                "multicast",
                "unspecified",
                "broadcast",
                "unique_local",
                "site_local",
                "documentation",
                "benchmarking",
                "reserved"
            ]
        );
    }

    #[test]
    fn parse_cidrs_accepts_lists_and_host_routes() {
        let cidrs =
            parse_cidrs(" 127.0.0.0/8, ::1/128\t10.0.0.0/8,,192.168.1.7 fd00::/8\n").unwrap();
        let shown: Vec<String> = cidrs.iter().map(Cidr::to_string).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "192.168.1.7/32",
                "fd00::/8"
            ]
        );
        assert_eq!(parse_cidrs("").unwrap(), vec![]);
        assert_eq!(parse_cidrs(" , ").unwrap(), vec![]);
        assert_eq!(parse_cidrs("0.0.0.0/0, ::/0").unwrap().len(), 2);
    }

    #[test]
    fn parse_cidrs_errors_name_the_bad_entry() {
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1/8", "did you mean 127.0.0.0/8?"),
            ("fd00::1/8", "did you mean fd00::/8?"),
            (
                "10.0.0.0/33",
                "prefix length \"33\" must be a number from 0 to 32",
            ),
            (
                "::/129",
                "prefix length \"129\" must be a number from 0 to 128",
            ),
            ("10.0.0.0/", "prefix length \"\""),
            ("10.0.0.0/+8", "prefix length \"+8\""),
            ("10.0.0.0/-1", "prefix length \"-1\""),
            ("/8", "\"\" is not an IP address"),
            ("localhost", "\"localhost\" is not an IP address"),
            ("127.1", "\"127.1\" is not an IP address"),
            (
                "10.0.0.0/8, 300.1.1.1",
                "\"300.1.1.1\" is not an IP address",
            ),
        ];
        for &(input, want) in cases {
            let err = parse_cidrs(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn cidr_contains_edges() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.0.0.0", true),
            ("127.0.0.0/8", "127.255.255.255", true),
            ("127.0.0.0/8", "126.255.255.255", false),
            ("127.0.0.0/8", "128.0.0.0", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", false), // families never mix
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("0.0.0.0/0", "255.255.255.255", true),
            ("0.0.0.0/0", "::", false),
            ("::/0", "ffff::", true),
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("fd00::/8", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("fd00::/8", "fe00::", false),
            ("fd00::/8", "fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
        ];
        for &(cidr, addr, want) in cases {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip(addr)), want, "{cidr} contains {addr}");
        }
    }

    #[test]
    fn check_ip_allows_public_and_listed_addresses() {
        let allowed = parse_cidrs("127.0.0.0/8, 10.1.0.0/16, fd00::/8").unwrap();
        let cases: &[(&str, Result<(), Rule>)] = &[
            ("8.8.8.8", Ok(())),
            ("2606:4700:4700::1111", Ok(())),
            ("127.0.0.1", Ok(())),
            ("127.200.0.1", Ok(())),
            ("::ffff:127.0.0.1", Ok(())), // mapped: allowed through its IPv4 form
            ("10.1.255.255", Ok(())),
            ("10.2.0.0", Err(Rule::Private)),
            ("::ffff:10.2.0.0", Err(Rule::Private)),
            ("fd00::1", Ok(())),
            ("fc00::1", Err(Rule::UniqueLocal)),
            ("::1", Err(Rule::Loopback)), // 127/8 does not cover IPv6 loopback
            ("64:ff9b::7f00:1", Err(Rule::Loopback)), // NAT64 is not the host itself
            ("169.254.169.254", Err(Rule::LinkLocal)),
        ];
        for &(addr, want) in cases {
            let got = check_ip(ip(addr), &allowed).map_err(|r| r.rule);
            assert_eq!(got, want, "{addr}");
        }
        assert_eq!(
            check_ip(ip("127.0.0.1"), &[]).map_err(|r| r.rule),
            Err(Rule::Loopback)
        );
    }

    #[test]
    fn refusal_message_names_rule_and_remedy() {
        let refusal = check_ip(ip("127.0.0.1"), &[]).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "refused by SSRF guard: 127.0.0.1 is loopback (rule loopback); \
             add it to webhook_outbox.allowed_cidrs to allow"
        );
        let named = Refusal {
            host: Some("internal.example".into()),
            ..check_ip(ip("10.0.0.5"), &[]).unwrap_err()
        };
        assert_eq!(
            named.to_string(),
            "refused by SSRF guard: internal.example resolves to 10.0.0.5, which is a private \
             network address (rule private); add it to webhook_outbox.allowed_cidrs to allow"
        );
    }

    /// getaddrinfo reads these numeric forms as 127.0.0.1 (inet_aton rules),
    /// without any network traffic. The guard sees the resolved address, so the
    /// disguise changes nothing.
    #[test]
    fn numeric_loopback_disguises_resolve_to_loopback_and_are_refused() {
        for host in ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.1"] {
            let addrs: Vec<SocketAddr> = (host, 8080)
                .to_socket_addrs()
                .unwrap_or_else(|e| panic!("{host}: {e}"))
                .collect();
            assert!(!addrs.is_empty(), "{host}");
            for addr in addrs {
                assert_eq!(addr.ip(), ip("127.0.0.1"), "{host}");
                let refusal = check_ip(addr.ip(), &[]).unwrap_err();
                assert_eq!(refusal.rule, Rule::Loopback, "{host}");
            }
        }
    }

    #[test]
    fn validate_url_accepts() {
        let cases: &[(&str, bool, bool, &str, u16)] = &[
            ("https://example.com/hook", false, true, "example.com", 443),
            ("https://example.com", false, true, "example.com", 443),
            (
                "HTTPS://Example.COM:8443/a?b=c&d",
                false,
                true,
                "Example.COM",
                8443,
            ),
            (
                "https://[2001:db8::1]:8443/x",
                false,
                true,
                "2001:db8::1",
                8443,
            ),
            (
                "https://[::ffff:127.0.0.1]/",
                false,
                true,
                "::ffff:127.0.0.1",
                443,
            ),
            ("https://127.0.0.1/x", false, true, "127.0.0.1", 443),
            ("http://example.com/hook", true, false, "example.com", 80),
            ("http://localhost:65535/", true, false, "localhost", 65535),
            ("https://h:1/", false, true, "h", 1),
            ("https://2130706433/", false, true, "2130706433", 443), // checked after resolution
        ];
        for &(url, allow_http, https, host, port) in cases {
            let t = validate_url(url, allow_http).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (t.scheme_https, t.host.as_str(), t.port),
                (https, host, port),
                "{url}"
            );
        }
    }

    #[test]
    fn validate_url_rejects_with_clear_messages() {
        let cases: &[(&str, &str)] = &[
            ("", "webhook URL is empty"),
            (" https://example.com/", "contains a space at byte 0"),
            ("https://example.com/a b", "contains a space at byte 21"),
            (
                "https://example.com/\n",
                "control character U+000A at byte 20",
            ),
            ("https://example.com/\t", "control character U+0009"),
            ("https://exämple.com/", "non-ASCII character 'ä' at byte 10"),
            ("https://example.com/#top", "fragment (#…)"),
            ("example.com", "\"example.com\" has no scheme"),
            ("example.com/hook", "is malformed"),
            ("ftp://example.com/", "scheme \"ftp\" is not supported"),
            ("https://", "\"https://\" is malformed"),
            ("https:///hook", "is malformed"),
            ("https://:8443/", "\"https://:8443/…\" has no host"),
            ("https://[::1/", "is malformed"),
            (
                "https://[v1.x]/",
                "host \"[v1.x]\" is not a valid IPv6 address",
            ),
            (
                "https://user:secret@example.com/",
                "must not contain credentials",
            ),
            ("https://user@example.com/", "must not contain credentials"),
            (
                "https://example.com:0/",
                "port \"0\" is not a number from 1 to 65535",
            ),
            ("https://example.com:65536/", "port \"65536\""),
            ("https://example.com:99999999999/", "port \"99999999999\""),
            ("https://example.com:abc/", "port \"abc\""),
            ("https://example.com:/", "port \"\""),
            ("https://example.com:+80/", "port \"+80\""),
            (
                "http://example.com/",
                "http URLs are refused while webhook_outbox.allow_http is off; use https",
            ),
        ];
        for &(url, want) in cases {
            let err = validate_url(url, false).unwrap_err().to_string();
            assert!(err.contains(want), "{url:?}: got {err:?}, want {want:?}");
        }
        for url in [
            "https://user:hunter2@example.com/",
            "https://u:hunter2@[::1/",
            "u:hunter2@host",
        ] {
            let err = validate_url(url, false).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "credentials echoed: {err}");
        }
        assert_eq!(redacted("https://u:p@[::1/x@y"), "https://***@[::1/…");
        assert_eq!(redacted("https://h/x@y?token=1"), "https://h/…");
        assert_eq!(redacted("u:p@h"), "***@h");
        for url in [
            "https:///s3cret?token=s3cret",
            "host.example/s3cret",
            "https://:1/s3cret",
            "/s3cret?next=https://x",
            "host/s3cret?u=http://a",
        ] {
            let err = validate_url(url, false).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "path or query echoed: {err}");
        }
    }
}
