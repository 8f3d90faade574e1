//! Sending webhooks: URL and address policy, Standard Webhooks signatures and
//! the HTTP client used by the delivery threads. Plain Rust, no pgrx: nothing
//! here may call into Postgres, so it runs on any thread and tests without a
//! server.
//!
//! The client is split by concern: `client` (the request and its
//! [`Outcome`]), `connect` (connections, name resolution, reuse), `tls`
//! (roots and configuration), `retry_after` (the receiver's `Retry-After`)
//! and `headers` (what may go into a header).

mod client;
mod connect;
mod headers;
pub mod policy;
mod retry_after;
pub mod signature;
#[cfg(test)]
pub(crate) mod test_server;
mod tls;
#[cfg(test)]
mod tls_tests;

pub use client::{
    Client, FailureClass, HttpConfig, Outcome, Request, RESPONSE_BODY_CAP, RESPONSE_PREFIX_BYTES,
};
pub use headers::{check_event_key, truncate, validate_header, MAX_EVENT_KEY_BYTES};
pub use policy::{
    check_ip, classify, parse_cidrs, validate_url, Cidr, Refusal, Rule, TargetUrl, UrlError,
};
pub use signature::{
    decode_secret, generate_ed25519_secret, generate_secret, generate_secret_like, sign,
    validate_secret, SecretError, SigningKey,
};
