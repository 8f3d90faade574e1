//! webhook_outbox_core: the parts of webhook_outbox that never call into
//! Postgres, so that they run on any thread (the delivery and /metrics
//! threads) and test with plain `#[test]`s, without a server.
//!
//! - `delivery`: the HTTP client, URL and address policy (SSRF guard),
//!   Standard Webhooks signatures.
//! - `dispatch`: the delivery thread, which starts claimed jobs with a fair
//!   share of request slots per endpoint.
//! - `outcome` (sent, retry or dead) and `circuit` (endpoint health, the
//!   breaker): the rules the settle step applies.
//! - `ratelimit`: per-endpoint rate limits (the table lives in shared memory).
//! - `bucket`: rollout decisions.
//! - `backfill`: checking one NDJSON line of `backfill`.
//! - `scrape`: the `GET /metrics` listener's threads.

pub mod backfill;
pub mod bucket;
pub mod circuit;
pub mod delivery;
pub mod dispatch;
pub mod outcome;
pub mod ratelimit;
pub mod scrape;

/// The wall clock as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
