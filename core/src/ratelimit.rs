//! Per-endpoint rate limits: GCRA (the token bucket as a single timestamp),
//! kept in a fixed table that lives in shared memory so that the limit holds
//! across all workers. Pure code; `src/shmem.rs` only provides the lock.

/// Endpoints tracked at once. A slot whose endpoint has been idle for longer
/// than one emission interval holds no information and is reused.
pub const SLOTS: usize = 1024;

#[derive(Clone, Copy)]
pub struct RateTable {
    /// (endpoint id, theoretical arrival time in µs); id 0 = free.
    slots: [(i64, i64); SLOTS],
}

impl Default for RateTable {
    fn default() -> Self {
        RateTable {
            slots: [(0, 0); SLOTS],
        }
    }
}

/// The longest spacing between two requests: one a day. `create_endpoint`
/// refuses rates below `MIN_RPS`; this bounds rates written some other way.
const MAX_INTERVAL_US: i64 = 86_400 * 1_000_000;

/// The lowest rate limit an endpoint may set (one request every 1000 s);
/// 0 means unlimited.
pub const MIN_RPS: f64 = 0.001;
/// The highest rate limit an endpoint may set.
pub const MAX_RPS: f64 = 1_000_000.0;

/// When a request may go: now, or later (deferred, not failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Now,
    At(i64),
}

impl RateTable {
    /// Admit one request to `endpoint` at `now_us` under `rps` (requests per
    /// second, burst of one: requests are spaced evenly). `queued` is how many
    /// requests of this endpoint were already deferred in this round: each
    /// gets its own later slot, so a backlog comes back spread out instead of
    /// all at once. Only admitted requests consume a slot.
    pub fn admit(&mut self, endpoint: i64, rps: f64, now_us: i64, queued: u32) -> Admit {
        if rps.is_nan() || rps <= 0.0 || rps.is_infinite() {
            return Admit::Now;
        }
        // Saturating: a rate no input check let through (a row written
        // directly) must not overflow the time arithmetic of every claim.
        let interval = (1_000_000.0 / rps).clamp(1.0, MAX_INTERVAL_US as f64) as i64;
        let slot = self.slot(endpoint);
        let tat = slot.1.max(now_us);
        if queued == 0 && tat <= now_us {
            slot.1 = tat.saturating_add(interval);
            Admit::Now
        } else {
            Admit::At(tat.saturating_add(interval.saturating_mul(i64::from(queued))))
        }
    }

    /// The endpoint's slot: found within a short probe window, else the free
    /// or stalest slot of that window is taken over. Taking over a slot whose
    /// time has passed loses nothing: past times admit at once anyway.
    fn slot(&mut self, endpoint: i64) -> &mut (i64, i64) {
        const WINDOW: usize = 16;
        let start = (endpoint as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize % SLOTS;
        let window = (0..WINDOW).map(|i| (start + i) % SLOTS);
        let j = match window.clone().find(|&j| self.slots[j].0 == endpoint) {
            Some(j) => j,
            None => {
                let j = window
                    .min_by_key(|&j| {
                        if self.slots[j].0 == 0 {
                            i64::MIN
                        } else {
                            self.slots[j].1
                        }
                    })
                    .unwrap_or(start);
                self.slots[j] = (endpoint, 0);
                j
            }
        };
        &mut self.slots[j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    #[test]
    fn unlimited_admits_everything() {
        let mut t = RateTable::default();
        for _ in 0..1000 {
            assert_eq!(t.admit(1, 0.0, 0, 0), Admit::Now);
        }
    }

    #[test]
    fn spaces_requests_evenly() {
        let mut t = RateTable::default();
        assert_eq!(t.admit(7, 10.0, 0, 0), Admit::Now);
        // The next slot is 100 ms later; deferred requests line up behind it.
        assert_eq!(t.admit(7, 10.0, 0, 0), Admit::At(SEC / 10));
        assert_eq!(t.admit(7, 10.0, 0, 1), Admit::At(2 * SEC / 10));
        assert_eq!(t.admit(7, 10.0, SEC / 10, 0), Admit::Now);
        assert_eq!(t.admit(7, 10.0, SEC / 10 + 1, 0), Admit::At(2 * SEC / 10));
    }

    #[test]
    fn twenty_requests_at_ten_per_second_take_about_two_seconds() {
        let mut t = RateTable::default();
        let mut now = 0;
        let mut sent = 0;
        while sent < 20 {
            match t.admit(3, 10.0, now, 0) {
                Admit::Now => sent += 1,
                Admit::At(at) => now = at,
            }
        }
        assert_eq!(now, 19 * SEC / 10);
    }

    #[test]
    fn endpoints_are_independent_and_idle_time_is_not_banked() {
        let mut t = RateTable::default();
        assert_eq!(t.admit(1, 1.0, 0, 0), Admit::Now);
        assert_eq!(t.admit(2, 1.0, 0, 0), Admit::Now);
        assert_eq!(t.admit(1, 1.0, 0, 0), Admit::At(SEC));
        // After a long pause only one request goes at once (burst of one).
        assert_eq!(t.admit(1, 1.0, 100 * SEC, 0), Admit::Now);
        assert_eq!(t.admit(1, 1.0, 100 * SEC, 0), Admit::At(101 * SEC));
    }

    #[test]
    fn absurd_rates_saturate_instead_of_overflowing() {
        let mut t = RateTable::default();
        assert_eq!(t.admit(9, 2e-13, i64::MAX - 5, 0), Admit::Now);
        assert_eq!(
            t.admit(9, 2e-13, i64::MAX - 5, u32::MAX),
            Admit::At(i64::MAX)
        );
        assert_eq!(t.admit(9, 2e-13, 0, 1), Admit::At(i64::MAX));
    }

    #[test]
    fn a_full_table_reuses_stale_slots() {
        let mut t = RateTable::default();
        for id in 1..=(SLOTS as i64 * 2) {
            assert_eq!(t.admit(id, 1.0, 0, 0), Admit::Now);
        }
        // Much later every slot is stale: new endpoints are admitted.
        assert_eq!(t.admit(1_000_000, 1.0, 10 * SEC, 0), Admit::Now);
    }
}
