//! Endpoint health and the circuit breaker, as a pure state machine.
//!
//! `src/settle/health.rs` loads an endpoint's `health_metrics` row, folds the
//! batch's results in with `Health::record`, and writes it back. Admission
//! (whether a claim may hand out a delivery for an endpoint) is the mirror of
//! these states and lives in the claim query, `sql/claim.sql`: closed admits,
//! open admits nothing until `open_ms` has passed, then one probe
//! (`half_open`), whose result closes or re-opens the circuit.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
    pub fn parse(s: &str) -> CircuitState {
        match s {
            "open" => CircuitState::Open,
            "half_open" => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub open_ms: i64,
}

/// Weight of the newest response time in the moving average.
const EWMA_ALPHA: f64 = 0.2;

/// One endpoint's `health_metrics` row. Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    pub total: i64,
    pub successful: i64,
    pub failed: i64,
    pub consecutive_failures: i32,
    pub avg_response_ms: Option<f64>,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_status_code: Option<i32>,
    pub circuit: CircuitState,
    pub circuit_opened_at: Option<i64>,
    /// The first failure since the last success: how long it has been failing.
    pub failing_since: Option<i64>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            total: 0,
            successful: 0,
            failed: 0,
            consecutive_failures: 0,
            avg_response_ms: None,
            last_success_at: None,
            last_failure_at: None,
            last_error: None,
            last_status_code: None,
            circuit: CircuitState::Closed,
            circuit_opened_at: None,
            failing_since: None,
        }
    }
}

impl Health {
    /// Fold one attempt's result in.
    pub fn record(
        &mut self,
        success: bool,
        status_code: Option<i32>,
        response_ms: Option<f64>,
        error: Option<&str>,
        now_ms: i64,
        policy: &BreakerPolicy,
    ) {
        self.total += 1;
        self.last_status_code = status_code;
        if let Some(ms) = response_ms {
            self.avg_response_ms = Some(match self.avg_response_ms {
                Some(avg) => avg + EWMA_ALPHA * (ms - avg),
                None => ms,
            });
        }
        if success {
            self.successful += 1;
            self.consecutive_failures = 0;
            self.last_success_at = Some(now_ms);
            self.circuit = CircuitState::Closed;
            self.circuit_opened_at = None;
            self.failing_since = None;
            return;
        }
        self.failed += 1;
        self.failing_since.get_or_insert(now_ms);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_failure_at = Some(now_ms);
        self.last_error = Some(
            crate::outcome::error_text(status_code, error)
                .unwrap_or_else(|| "unknown error".to_owned()),
        );
        let trips = match self.circuit {
            // The probe failed: open again for another full period.
            CircuitState::HalfOpen => true,
            CircuitState::Closed => self.consecutive_failures as u32 >= policy.failure_threshold,
            // Late results of requests sent before it opened change nothing.
            CircuitState::Open => false,
        };
        if trips {
            self.circuit = CircuitState::Open;
            self.circuit_opened_at = Some(now_ms);
        }
    }

    /// Whether it has failed without a success for at least `after_ms`
    /// (0: never), and so is to be disabled.
    pub fn failing_too_long(&self, now_ms: i64, after_ms: i64) -> bool {
        after_ms > 0
            && self
                .failing_since
                .is_some_and(|since| now_ms - since >= after_ms)
    }

    /// What operators are told of the change from `before` to this state
    /// (operational events): the endpoint started failing (reached
    /// `failing_after` consecutive failures) or recovered from that (a
    /// success), its circuit opened (from closed: not each re-opening after
    /// a failed probe) or closed.
    pub fn notices(&self, before: &Health, failing_after: i32) -> Vec<&'static str> {
        let failing = |h: &Health| h.consecutive_failures >= failing_after;
        let mut notices = Vec::new();
        if !failing(before) && failing(self) {
            notices.push("endpoint.failing");
        }
        if failing(before) && self.consecutive_failures == 0 {
            notices.push("endpoint.recovered");
        }
        match (before.circuit, self.circuit) {
            (CircuitState::Closed, CircuitState::Open) => notices.push("circuit.opened"),
            (CircuitState::Open | CircuitState::HalfOpen, CircuitState::Closed) => {
                notices.push("circuit.closed")
            }
            _ => {}
        }
        notices
    }

    /// `unavailable` while the circuit is not closed, `degraded` after any
    /// failure since the last success, `healthy` otherwise.
    pub fn status(&self) -> &'static str {
        if self.circuit != CircuitState::Closed {
            "unavailable"
        } else if self.consecutive_failures > 0 {
            "degraded"
        } else {
            "healthy"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 5,
        open_ms: 60_000,
    };

    fn fail(h: &mut Health, now: i64) {
        h.record(false, Some(500), Some(10.0), None, now, &POLICY);
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut h = Health::default();
        for i in 1..5 {
            fail(&mut h, i);
            assert_eq!(h.circuit, CircuitState::Closed, "after {i} failures");
            assert_eq!(h.status(), "degraded");
        }
        fail(&mut h, 5);
        assert_eq!(h.circuit, CircuitState::Open);
        assert_eq!(h.circuit_opened_at, Some(5));
        assert_eq!(h.status(), "unavailable");
        assert_eq!(h.last_error.as_deref(), Some("HTTP 500"));
        // In-flight stragglers do not move the opening time.
        fail(&mut h, 9);
        assert_eq!(h.circuit_opened_at, Some(5));
        assert_eq!((h.total, h.failed, h.consecutive_failures), (6, 6, 6));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut h = Health::default();
        for i in 0..4 {
            fail(&mut h, i);
        }
        h.record(true, Some(200), Some(5.0), None, 10, &POLICY);
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(h.status(), "healthy");
        for i in 0..4 {
            fail(&mut h, 20 + i);
        }
        assert_eq!(h.circuit, CircuitState::Closed);
    }

    #[test]
    fn failing_too_long_counts_from_the_first_failure_since_a_success() {
        let day = 86_400_000;
        let mut h = Health::default();
        assert!(!h.failing_too_long(10 * day, 5 * day));
        fail(&mut h, day);
        fail(&mut h, 3 * day);
        assert_eq!(h.failing_since, Some(day));
        assert!(!h.failing_too_long(6 * day - 1, 5 * day));
        assert!(h.failing_too_long(6 * day, 5 * day));
        assert!(!h.failing_too_long(60 * day, 0), "0: never");
        h.record(true, Some(200), None, None, 6 * day, &POLICY);
        assert_eq!(h.failing_since, None);
        assert!(!h.failing_too_long(60 * day, 5 * day));
        fail(&mut h, 7 * day);
        assert_eq!(h.failing_since, Some(7 * day));
    }

    #[test]
    fn notices_mark_each_transition_once() {
        let mut h = Health::default();
        let mut heard = Vec::new();
        for i in 0..7 {
            let before = h.clone();
            fail(&mut h, i);
            heard.extend(h.notices(&before, 3));
        }
        assert_eq!(heard, ["endpoint.failing", "circuit.opened"]);
        // A failed probe re-opens the circuit: no new notice.
        h.circuit = CircuitState::HalfOpen;
        let before = h.clone();
        fail(&mut h, 100);
        assert!(h.notices(&before, 3).is_empty());
        h.circuit = CircuitState::HalfOpen;
        let before = h.clone();
        h.record(true, Some(200), None, None, 200, &POLICY);
        assert_eq!(
            h.notices(&before, 3),
            ["endpoint.recovered", "circuit.closed"]
        );
        // Failures under the threshold, then a success: nothing to tell.
        let before = h.clone();
        fail(&mut h, 300);
        fail(&mut h, 301);
        h.record(true, Some(200), None, None, 302, &POLICY);
        assert!(h.notices(&before, 3).is_empty());
    }

    #[test]
    fn probe_result_closes_or_reopens() {
        let mut h = Health::default();
        for i in 0..5 {
            fail(&mut h, i);
        }
        // The claim query moved it to half_open to let one probe through.
        h.circuit = CircuitState::HalfOpen;
        fail(&mut h, 70_000);
        assert_eq!(h.circuit, CircuitState::Open);
        assert_eq!(h.circuit_opened_at, Some(70_000));

        h.circuit = CircuitState::HalfOpen;
        h.record(true, Some(204), Some(3.0), None, 140_000, &POLICY);
        assert_eq!(h.circuit, CircuitState::Closed);
        assert_eq!(h.circuit_opened_at, None);
        assert_eq!(h.last_success_at, Some(140_000));
    }

    #[test]
    fn response_time_is_an_ewma() {
        let mut h = Health::default();
        h.record(true, Some(200), Some(100.0), None, 0, &POLICY);
        assert_eq!(h.avg_response_ms, Some(100.0));
        h.record(true, Some(200), Some(200.0), None, 1, &POLICY);
        assert_eq!(h.avg_response_ms, Some(120.0));
        h.record(false, None, None, Some("connection refused"), 2, &POLICY);
        assert_eq!(h.avg_response_ms, Some(120.0));
        assert_eq!(h.last_error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn state_names_round_trip() {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            assert_eq!(CircuitState::parse(s.as_str()), s);
        }
    }
}
