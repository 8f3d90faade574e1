//! Sending webhooks: URL and address policy, Standard Webhooks signatures and
//! the HTTP client used by the delivery threads. Plain Rust, no pgrx: nothing
//! here may call into Postgres, so it runs on any thread and tests without a
//! server.

pub mod http;
pub mod policy;
pub mod signature;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tls_tests;

pub use http::{check_event_key, truncate, validate_header, Client, HttpConfig, Outcome, Request};
pub use policy::{
    check_ip, classify, parse_cidrs, validate_url, Cidr, Refusal, Rule, TargetUrl, UrlError,
};
pub use signature::{decode_secret, generate_secret, sign, validate_secret, SecretError};
