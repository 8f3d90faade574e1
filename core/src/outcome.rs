//! What an attempt's result means for its delivery: sent, retry later, or dead.
//!
//! This is the one decision point: `record_attempt` (for external workers),
//! `run_once` and the background worker all settle through `src/settle/`,
//! which asks `decide` here. Pure functions, no Postgres.

/// How retries are spaced.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// The delay before each retry, in order (see [`parse_schedule`]); the
    /// last one repeats for any attempt beyond.
    pub schedule_ms: Vec<u64>,
    /// A receiver's `Retry-After` is honoured up to this.
    pub retry_after_max_ms: u64,
}

/// The default `retry_schedule`: Svix's, about 27.6 hours in all, so that
/// an outage of a day is retried through even at the low end of the jitter.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// The most steps a schedule may have (one more attempt each).
pub const MAX_SCHEDULE_STEPS: usize = 99;

/// The longest single step: a week.
pub const MAX_STEP_MS: u64 = 7 * 86_400_000;

/// A retry schedule as written in `webhook_outbox.retry_schedule` and
/// `create_endpoint(retry_schedule => ...)`: delays separated by commas, each
/// a whole number with a unit (`ms`, `s`, `min` or `m`, `h`, `d`), e.g.
/// `5s,5m,30m,2h`. Returns the delays in milliseconds.
pub fn parse_schedule(text: &str) -> Result<Vec<u64>, String> {
    if text.trim().is_empty() {
        return Err("a retry schedule needs at least one step, e.g. 5s,5m,30m".into());
    }
    let steps = text
        .split(',')
        .map(|step| {
            let step = step.trim();
            let digits = step
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(step.len());
            let (number, unit) = step.split_at(digits);
            let scale: u64 = match unit.trim() {
                "ms" => 1,
                "s" => 1_000,
                "m" | "min" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => {
                    return Err(format!(
                        "retry step \"{step}\" needs a unit: ms, s, m, h or d"
                    ))
                }
            };
            let ms = number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .filter(|ms| (1..=MAX_STEP_MS).contains(ms))
                .ok_or_else(|| {
                    format!("retry step \"{step}\" must be a whole number from 1 ms to 7 d")
                })?;
            Ok(ms)
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if steps.len() > MAX_SCHEDULE_STEPS {
        return Err(format!(
            "a retry schedule has at most {MAX_SCHEDULE_STEPS} steps, got {}",
            steps.len()
        ));
    }
    Ok(steps)
}

/// What an HTTP result says about the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Success,
    /// Worth trying again: network error, 408, 429, 5xx.
    Transient,
    /// Trying again would not help: other statuses, refused targets.
    Permanent,
    /// 410 Gone: the receiver says the endpoint is no more. The Standard
    /// Webhooks spec asks that it be disabled; its deliveries wait.
    Gone,
}

/// `status` is `None` for a network error; `permanent` marks failures decided
/// before any request (a target refused by the SSRF guard, an invalid URL).
pub fn classify(status: Option<i32>, permanent: bool) -> Class {
    match (permanent, status) {
        (true, _) => Class::Permanent,
        (false, None) => Class::Transient,
        (false, Some(200..=299)) => Class::Success,
        (false, Some(408 | 429 | 500..=599)) => Class::Transient,
        (false, Some(410)) => Class::Gone,
        (false, Some(_)) => Class::Permanent,
    }
}

/// The delivery's next state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Retry {
        delay_ms: u64,
    },
    Dead,
    /// Back to waiting, due at once, whatever its attempts: its endpoint is
    /// disabled, and it goes when an operator enables it again.
    Gone,
}

impl Verdict {
    /// The `deliveries.status` it leads to.
    pub fn status(&self) -> &'static str {
        match self {
            Verdict::Sent => "sent",
            Verdict::Retry { .. } | Verdict::Gone => "retry",
            Verdict::Dead => "dead",
        }
    }
}

/// The delay after failed attempt number `attempt` (from 1): that step of
/// the schedule (the last one beyond its end), spread by ±10% so that a
/// burst of failures does not come back as a burst of retries. `jitter` is
/// in [0, 1).
pub fn backoff_ms(attempt: i32, schedule_ms: &[u64], jitter: f64) -> u64 {
    let step = (attempt.max(1) as usize - 1).min(schedule_ms.len().saturating_sub(1));
    let base = schedule_ms.get(step).copied().unwrap_or(MAX_STEP_MS) as f64;
    (base * (0.9 + 0.2 * jitter.clamp(0.0, 1.0))) as u64
}

/// Decide after attempt number `attempt` (1-based) of at most `max_attempts`.
/// A transient failure retries after `Retry-After` when the receiver gave one
/// (capped), otherwise after the backoff step; no attempts left means dead.
/// `schedule_ms`: the endpoint's own schedule, else the policy's.
pub fn decide(
    class: Class,
    attempt: i32,
    max_attempts: i32,
    retry_after_ms: Option<u64>,
    policy: &RetryPolicy,
    schedule_ms: Option<&[u64]>,
    jitter: f64,
) -> Verdict {
    match class {
        Class::Success => Verdict::Sent,
        Class::Permanent => Verdict::Dead,
        Class::Gone => Verdict::Gone,
        Class::Transient if attempt >= max_attempts => Verdict::Dead,
        Class::Transient => Verdict::Retry {
            delay_ms: match retry_after_ms {
                Some(ms) => ms.min(policy.retry_after_max_ms),
                None => backoff_ms(attempt, schedule_ms.unwrap_or(&policy.schedule_ms), jitter),
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

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule_ms: vec![5_000, 10_000, 20_000, 40_000],
            retry_after_max_ms: 60_000,
        }
    }

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
            (Some(410), false, Class::Gone),
            (Some(410), true, Class::Permanent),
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
    fn schedules_parse_with_units_and_spaces() {
        assert_eq!(
            parse_schedule("5s,5m,30m,2h,5h,10h,10h"),
            Ok(vec![
                5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000
            ])
        );
        assert_eq!(
            parse_schedule(" 250ms , 1 min,1d "),
            Ok(vec![250, 60_000, 86_400_000])
        );
        assert_eq!(parse_schedule("7d"), Ok(vec![MAX_STEP_MS]));
    }

    #[test]
    fn schedules_refuse_what_is_not_a_delay() {
        for bad in [
            "",
            " ",
            "5",
            "5s,",
            ",5s",
            "5x",
            "-5s",
            "0s",
            "1.5s",
            "8d",
            "s",
            "5s;10s",
            "99999999999999999999d",
        ] {
            let err = parse_schedule(bad).expect_err(bad);
            assert!(
                err.contains("step") || err.contains("schedule"),
                "{bad}: {err}"
            );
        }
        let long = vec!["1s"; MAX_SCHEDULE_STEPS + 1].join(",");
        assert!(parse_schedule(&long).unwrap_err().contains("at most"));
        assert!(parse_schedule(&long[3..]).is_ok());
    }

    /// The default outlasts an outage of a day, even at the low end of the jitter.
    #[test]
    fn default_schedule_retries_through_a_day() {
        let steps = parse_schedule(DEFAULT_SCHEDULE).unwrap();
        let shortest: u64 = (1..=steps.len() as i32)
            .map(|n| backoff_ms(n, &steps, 0.0))
            .sum();
        assert!(shortest >= 86_400_000, "{shortest} ms");
    }

    #[test]
    fn backoff_follows_the_schedule_and_repeats_its_last_step() {
        // jitter 0.5 is the midpoint: exactly the step.
        let steps: Vec<u64> = (1..=6)
            .map(|n| backoff_ms(n, &policy().schedule_ms, 0.5))
            .collect();
        assert_eq!(steps, vec![5_000, 10_000, 20_000, 40_000, 40_000, 40_000]);
        assert_eq!(backoff_ms(i32::MAX, &policy().schedule_ms, 0.5), 40_000);
        assert_eq!(backoff_ms(0, &policy().schedule_ms, 0.5), 5_000);
    }

    #[test]
    fn backoff_jitter_stays_within_ten_percent() {
        assert_eq!(backoff_ms(1, &[5_000], 0.0), 4_500);
        assert_eq!(backoff_ms(1, &[5_000], 0.999_999_9), 5_499);
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
            let d = backoff_ms(3, &policy().schedule_ms, j);
            assert!((18_000..=22_000).contains(&d), "{d}");
        }
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
        let d = |class, attempt, max, ra| decide(class, attempt, max, ra, &policy(), None, 0.5);
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
        // 410 never kills a delivery, even on its last attempt.
        assert_eq!(d(Class::Gone, 5, 5, None), Verdict::Gone);
        assert_eq!(Verdict::Gone.status(), "retry");
        // An endpoint's own schedule replaces the policy's.
        assert_eq!(
            decide(
                Class::Transient,
                2,
                5,
                None,
                &policy(),
                Some(&[60_000, 120_000]),
                0.5
            ),
            Verdict::Retry { delay_ms: 120_000 }
        );
    }
}
