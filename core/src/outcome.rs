//! What an attempt's result means for its delivery: sent, retry later, or dead.
//!
//! This is the one decision point: `record_attempt` (for external workers),
//! `run_once` and the background worker all settle through `src/settle/`,
//! which asks `decide` here. Pure functions, no Postgres.

/// How retries are spaced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base_ms: u64,
    /// No delay between two retries exceeds this.
    pub max_ms: u64,
    /// A receiver's `Retry-After` is honoured up to this.
    pub retry_after_max_ms: u64,
}

/// What an HTTP result says about the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Success,
    /// Worth trying again: network error, 408, 429, 5xx.
    Transient,
    /// Trying again would not help: other statuses, refused targets.
    Permanent,
}

/// `status` is `None` for a network error; `permanent` marks failures decided
/// before any request (a target refused by the SSRF guard, an invalid URL).
pub fn classify(status: Option<i32>, permanent: bool) -> Class {
    match (permanent, status) {
        (true, _) => Class::Permanent,
        (false, None) => Class::Transient,
        (false, Some(200..=299)) => Class::Success,
        (false, Some(408 | 429 | 500..=599)) => Class::Transient,
        (false, Some(_)) => Class::Permanent,
    }
}

/// The delivery's next state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Retry { delay_ms: u64 },
    Dead,
}

impl Verdict {
    /// The `deliveries.status` it leads to.
    pub fn status(&self) -> &'static str {
        match self {
            Verdict::Sent => "sent",
            Verdict::Retry { .. } => "retry",
            Verdict::Dead => "dead",
        }
    }
}

/// Exponential backoff: `base · 2^(attempt-1)`, capped, spread by ±20% so
/// that a burst of failures does not come back as a burst of retries.
/// `attempt` counts from 1 (the attempt that just failed); `jitter` is in [0, 1).
pub fn backoff_ms(attempt: i32, policy: &RetryPolicy, jitter: f64) -> u64 {
    let doublings = attempt.saturating_sub(1).clamp(0, 62) as u32;
    let raw = policy.base_ms.saturating_mul(1u64 << doublings.min(40));
    let capped = raw.min(policy.max_ms) as f64;
    ((capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))) as u64).min(policy.max_ms)
}

/// Decide after attempt number `attempt` (1-based) of at most `max_attempts`.
/// A transient failure retries after `Retry-After` when the receiver gave one
/// (capped), otherwise after the backoff step; no attempts left means dead.
pub fn decide(
    class: Class,
    attempt: i32,
    max_attempts: i32,
    retry_after_ms: Option<u64>,
    policy: &RetryPolicy,
    jitter: f64,
) -> Verdict {
    match class {
        Class::Success => Verdict::Sent,
        Class::Permanent => Verdict::Dead,
        Class::Transient if attempt >= max_attempts => Verdict::Dead,
        Class::Transient => Verdict::Retry {
            delay_ms: match retry_after_ms {
                Some(ms) => ms.min(policy.retry_after_max_ms),
                None => backoff_ms(attempt, policy, jitter),
            },
        },
    }
}

/// A uniform draw in [0, 1) for jitter; quality does not matter, cost does.
pub fn jitter() -> f64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        u64::from_le_bytes(seed) | 1
    }));
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// The longest error text kept in attempts, deliveries and health_metrics:
/// receivers (and external workers) choose what it says, not how much is stored.
pub const MAX_ERROR_BYTES: usize = 1024;

pub fn bounded(error: &str) -> String {
    let mut text = error.to_owned();
    crate::delivery::truncate(&mut text, MAX_ERROR_BYTES);
    text
}

/// The error text kept for an attempt (`last_error`, `attempts.error`,
/// `v_dead_letters`): the error as reported, bounded, or for a failed status
/// without one `HTTP {code}`. `None` for a success without an error.
pub fn error_text(status: Option<i32>, error: Option<&str>) -> Option<String> {
    match (error, status) {
        (Some(e), _) => Some(bounded(e)),
        (None, Some(code)) if classify(Some(code), false) != Class::Success => {
            Some(format!("HTTP {code}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base_ms: 5_000,
        max_ms: 3_600_000,
        retry_after_max_ms: 60_000,
    };

    #[test]
    fn classification_table() {
        let cases = [
            (None, false, Class::Transient),
            (Some(200), false, Class::Success),
            (Some(204), false, Class::Success),
            (Some(299), false, Class::Success),
            (Some(301), false, Class::Permanent),
            (Some(302), false, Class::Permanent),
            (Some(400), false, Class::Permanent),
            (Some(404), false, Class::Permanent),
            (Some(408), false, Class::Transient),
            (Some(410), false, Class::Permanent),
            (Some(429), false, Class::Transient),
            (Some(500), false, Class::Transient),
            (Some(503), false, Class::Transient),
            (Some(599), false, Class::Transient),
            (Some(100), false, Class::Permanent),
            (Some(200), true, Class::Permanent),
            (None, true, Class::Permanent),
        ];
        for (status, permanent, want) in cases {
            assert_eq!(classify(status, permanent), want, "{status:?} {permanent}");
        }
    }

    #[test]
    fn backoff_doubles_from_base_without_jitter_at_midpoint() {
        // jitter 0.5 is the midpoint: exactly base · 2^(n-1): 5s, 10s, 20s, 40s with the default base.
        let steps: Vec<u64> = (1..=4).map(|n| backoff_ms(n, &POLICY, 0.5)).collect();
        assert_eq!(steps, vec![5_000, 10_000, 20_000, 40_000]);
    }

    #[test]
    fn backoff_jitter_stays_within_twenty_percent() {
        assert_eq!(backoff_ms(1, &POLICY, 0.0), 4_000);
        assert_eq!(backoff_ms(1, &POLICY, 0.999_999_9), 5_999);
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
            let d = backoff_ms(3, &POLICY, j);
            assert!((16_000..=24_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        assert_eq!(backoff_ms(30, &POLICY, 0.5), POLICY.max_ms);
        assert_eq!(backoff_ms(i32::MAX, &POLICY, 0.999), POLICY.max_ms);
        assert_eq!(backoff_ms(30, &POLICY, 0.0), POLICY.max_ms * 8 / 10);
    }

    #[test]
    fn error_texts() {
        assert_eq!(error_text(Some(503), None).as_deref(), Some("HTTP 503"));
        assert_eq!(error_text(Some(200), None), None);
        assert_eq!(error_text(None, None), None);
        assert_eq!(error_text(Some(500), Some("boom")).as_deref(), Some("boom"));
        let long = "x".repeat(5 * MAX_ERROR_BYTES);
        assert_eq!(
            error_text(None, Some(&long)).map(|t| t.len()),
            Some(MAX_ERROR_BYTES)
        );
    }

    #[test]
    fn decisions() {
        let d = |class, attempt, max, ra| decide(class, attempt, max, ra, &POLICY, 0.5);
        assert_eq!(d(Class::Success, 1, 5, None), Verdict::Sent);
        assert_eq!(d(Class::Success, 5, 5, None), Verdict::Sent);
        assert_eq!(d(Class::Permanent, 1, 5, None), Verdict::Dead);
        assert_eq!(
            d(Class::Transient, 1, 5, None),
            Verdict::Retry { delay_ms: 5_000 }
        );
        assert_eq!(
            d(Class::Transient, 4, 5, None),
            Verdict::Retry { delay_ms: 40_000 }
        );
        assert_eq!(d(Class::Transient, 5, 5, None), Verdict::Dead);
        assert_eq!(d(Class::Transient, 1, 1, None), Verdict::Dead);
        // Retry-After replaces the backoff step, up to its cap.
        assert_eq!(
            d(Class::Transient, 1, 5, Some(2_000)),
            Verdict::Retry { delay_ms: 2_000 }
        );
        assert_eq!(
            d(Class::Transient, 1, 5, Some(999_000)),
            Verdict::Retry { delay_ms: 60_000 }
        );
        assert_eq!(d(Class::Transient, 5, 5, Some(2_000)), Verdict::Dead);
        assert_eq!(Verdict::Retry { delay_ms: 1 }.status(), "retry");
    }
}
