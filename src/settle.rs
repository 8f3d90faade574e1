//! Results back into the outbox, in the current transaction, in set-wise
//! statements (one per batch, not one per row). The retry rules come from
//! `outcome`, the health and breaker rules from `circuit`.

use crate::circuit::{CircuitState, Health};
use crate::outcome::{self, Verdict};
use crate::worker::pool::Ticket;
use crate::{guc, plans};
use pgrx::spi::{self, SpiClient};
use std::collections::{BTreeMap, HashSet};

/// One finished HTTP attempt (or a failure decided before any request).
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    /// `deliveries.attempt_count` when it was claimed.
    pub attempt_no: i32,
    pub max_attempts: i32,
    /// The claim's `lease_token`: a delivery claimed again since, settled,
    /// or replayed carries another (or none), and is left as it is.
    pub lease: [u8; 16],
    pub status_code: Option<i32>,
    pub duration_ms: Option<i32>,
    pub error: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub permanent: bool,
    pub response_body: Option<String>,
}

/// What `settle` wrote.
#[derive(Default)]
pub struct Settled {
    /// (delivery id, new status) for each delivery that was still ours.
    pub statuses: Vec<(i64, &'static str)>,
    /// Results for leases that were no longer ours, left unwritten.
    pub stale: usize,
    /// Endpoints among the results whose circuit is not closed now.
    pub open_circuits: HashSet<i64>,
    /// Health events of endpoints whose row another session holds (with
    /// `HealthLock::SkipLocked`): for the next settle.
    pub skipped_health: Vec<HealthEvent>,
}

/// Write the results, and health events `carried` over from an earlier settle.
pub fn settle(
    client: &mut SpiClient<'_>,
    results: &[AttemptResult],
    lock: HealthLock,
    carried: &[HealthEvent],
) -> spi::Result<Settled> {
    if results.is_empty() && carried.is_empty() {
        return Ok(Settled::default());
    }
    let policy = guc::retry_policy();
    let verdicts: Vec<Verdict> = results
        .iter()
        .map(|r| {
            outcome::decide(
                outcome::classify(r.status_code, r.permanent),
                r.attempt_no,
                r.max_attempts,
                r.retry_after_ms,
                &policy,
                outcome::jitter(),
            )
        })
        .collect();
    let column =
        |f: &dyn Fn(&AttemptResult) -> Option<String>| results.iter().map(f).collect::<Vec<_>>();
    // A status without an error text still gets one, for v_dead_letters and last_error.
    let error_text = |r: &AttemptResult| match (&r.error, r.status_code) {
        (Some(e), _) => Some(bounded(e)),
        (None, Some(code)) if !(200..=299).contains(&code) => Some(format!("HTTP {code}")),
        _ => None,
    };
    let settled = plans::execute(
        client,
        "WITH r AS (
             SELECT * FROM unnest($1::bigint[], $2::pg_catalog.text[], $3::int[], $4::pg_catalog.text[], $5::int[],
                                  $6::bigint[], $7::pg_catalog.text[], $8::int[], $9::bigint[], $10::pg_catalog.uuid[])
                 AS r(id, status, code, err, duration_ms, delay_ms, body, attempt_no, endpoint_id, lease)
         ), upd AS (
             UPDATE webhook_outbox.deliveries d
             SET status = r.status,
                 last_status_code = r.code,
                 last_error = r.err,
                 locked_until = NULL,
                 next_attempt_at = CASE WHEN r.status OPERATOR(pg_catalog.=) 'retry'
                                        THEN webhook_outbox._after_ms(r.delay_ms)
                                        ELSE d.next_attempt_at END,
                 sent_at = CASE WHEN r.status OPERATOR(pg_catalog.=) 'sent' THEN pg_catalog.now() END,
                 dead_at = CASE WHEN r.status OPERATOR(pg_catalog.=) 'dead' THEN pg_catalog.now() END
             FROM r
             -- Still our claim: under a lease, the one we took, not one taken since.
             WHERE d.id OPERATOR(pg_catalog.=) r.id AND d.locked_until IS NOT NULL
               AND d.lease_token OPERATOR(pg_catalog.=) r.lease
             RETURNING d.id, d.status
         ), log AS (
             INSERT INTO webhook_outbox.attempts
                 (delivery_id, endpoint_id, attempt_no, duration_ms, status_code, error, response_body)
             SELECT r.id, r.endpoint_id, r.attempt_no, r.duration_ms, r.code, r.err, r.body
             FROM r JOIN upd ON upd.id OPERATOR(pg_catalog.=) r.id
         )
         SELECT id, status FROM upd",
        &[
            results.iter().map(|r| r.delivery_id).collect::<Vec<_>>().into(),
            verdicts.iter().map(|v| v.status()).collect::<Vec<_>>().into(),
            results.iter().map(|r| r.status_code).collect::<Vec<_>>().into(),
            column(&error_text).into(),
            results.iter().map(|r| r.duration_ms).collect::<Vec<_>>().into(),
            verdicts
                .iter()
                .map(|v| match v {
                    Verdict::Retry { delay_ms } => Some(*delay_ms as i64),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .into(),
            column(&|r| r.response_body.clone()).into(),
            results.iter().map(|r| r.attempt_no).collect::<Vec<_>>().into(),
            results.iter().map(|r| r.endpoint_id).collect::<Vec<_>>().into(),
            results.iter().map(|r| pgrx::Uuid::from_bytes(r.lease)).collect::<Vec<_>>().into(),
        ],
    )?;
    let mut ours = HashSet::new();
    let mut statuses = Vec::with_capacity(results.len());
    for row in settled {
        let id = row.get::<i64>(1)?.unwrap_or_default();
        ours.insert(id);
        let status = match row.get::<&str>(2)?.unwrap_or_default() {
            "sent" => "sent",
            "retry" => "retry",
            _ => "dead",
        };
        statuses.push((id, status));
    }
    let health: Vec<HealthEvent> = carried
        .iter()
        .cloned()
        .chain(
            results
                .iter()
                .filter(|r| ours.contains(&r.delivery_id))
                .map(|r| HealthEvent {
                    endpoint_id: r.endpoint_id,
                    success: outcome::classify(r.status_code, r.permanent)
                        == outcome::Class::Success,
                    status_code: r.status_code,
                    response_ms: r.duration_ms.map(f64::from),
                    error: r.error.as_deref().map(bounded),
                }),
        )
        .collect();
    let (open_circuits, skipped_health) = record_health(client, &health, lock)?;
    let stale = results.len() - statuses.len();
    Ok(Settled {
        statuses,
        stale,
        open_circuits,
        skipped_health,
    })
}

/// One result as endpoint health sees it.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    pub endpoint_id: i64,
    pub success: bool,
    pub status_code: Option<i32>,
    pub response_ms: Option<f64>,
    pub error: Option<String>,
}

/// How `record_health` takes an endpoint's row that another session holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthLock {
    /// Wait for it (a caller reporting one result).
    Wait,
    /// Leave it, and hand its events back: the worker's settle must not stall
    /// (its lock_timeout would throw the whole batch away) on a row that, say,
    /// an external worker idle in a transaction after update_webhook_health()
    /// holds. Another worker's settle holds one for milliseconds.
    SkipLocked,
}

macro_rules! load_health {
    ($lock:literal) => {
        concat!(
            "SELECT webhook_id, total_deliveries, successful_deliveries, failed_deliveries,
                    consecutive_failures, avg_response_time_ms, last_status_code,
                    webhook_outbox._epoch_ms(last_success_at),
                    webhook_outbox._epoch_ms(last_failure_at),
                    last_error, circuit_state,
                    webhook_outbox._epoch_ms(circuit_opened_at)
             FROM webhook_outbox.health_metrics
             WHERE webhook_id OPERATOR(pg_catalog.=) ANY ($1)
             ORDER BY webhook_id ",
            $lock
        )
    };
}

/// Fold results into `health_metrics`: rows locked in id order (no deadlock
/// between workers), updated in Rust, written back in one statement. Returns
/// the endpoints whose circuit is not closed afterwards, and the events of
/// endpoints whose row was left locked (`HealthLock::SkipLocked`).
pub fn record_health(
    client: &mut SpiClient<'_>,
    events: &[HealthEvent],
    lock: HealthLock,
) -> spi::Result<(HashSet<i64>, Vec<HealthEvent>)> {
    if events.is_empty() {
        return Ok((HashSet::new(), Vec::new()));
    }
    let ids: Vec<i64> = {
        let mut ids: Vec<i64> = events.iter().map(|e| e.endpoint_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let mut rows: BTreeMap<i64, Health> = BTreeMap::new();
    let sql = match lock {
        HealthLock::Wait => load_health!("FOR UPDATE"),
        HealthLock::SkipLocked => load_health!("FOR UPDATE SKIP LOCKED"),
    };
    let loaded = plans::execute(client, sql, &[ids.clone().into()])?;
    for row in loaded {
        let id = row.get::<i64>(1)?.unwrap_or_default();
        rows.insert(
            id,
            Health {
                total: row.get(2)?.unwrap_or_default(),
                successful: row.get(3)?.unwrap_or_default(),
                failed: row.get(4)?.unwrap_or_default(),
                consecutive_failures: row.get(5)?.unwrap_or_default(),
                avg_response_ms: row.get(6)?,
                last_status_code: row.get(7)?,
                last_success_at: row.get(8)?,
                last_failure_at: row.get(9)?,
                last_error: row.get(10)?,
                circuit: CircuitState::parse(row.get::<&str>(11)?.unwrap_or("closed")),
                circuit_opened_at: row.get(12)?,
            },
        );
    }
    let now = now_ms();
    let policy = guc::breaker_policy();
    for e in events {
        if let Some(h) = rows.get_mut(&e.endpoint_id) {
            h.record(
                e.success,
                e.status_code,
                e.response_ms,
                e.error.as_deref(),
                now,
                &policy,
            );
        }
    }
    let hs: Vec<&Health> = rows.values().collect();
    plans::execute(
        client,
        "UPDATE webhook_outbox.health_metrics h
         SET total_deliveries = u.total, successful_deliveries = u.ok, failed_deliveries = u.failed,
             consecutive_failures = u.consecutive, avg_response_time_ms = u.avg_ms,
             last_status_code = u.code,
             last_success_at = webhook_outbox._from_epoch_ms(u.success_at),
             last_failure_at = webhook_outbox._from_epoch_ms(u.failure_at),
             last_error = u.err, health_status = u.health, circuit_state = u.circuit,
             circuit_opened_at = webhook_outbox._from_epoch_ms(u.opened_at),
             updated_at = pg_catalog.now()
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::pg_catalog.float8[],
                     $7::int[], $8::bigint[], $9::bigint[], $10::pg_catalog.text[], $11::pg_catalog.text[], $12::pg_catalog.text[], $13::bigint[])
             AS u(id, total, ok, failed, consecutive, avg_ms, code, success_at, failure_at, err, health, circuit, opened_at)
         WHERE h.webhook_id OPERATOR(pg_catalog.=) u.id",
        &[
            rows.keys().copied().collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.total).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.successful).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.failed).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.consecutive_failures).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.avg_response_ms).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.last_status_code).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.last_success_at).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.last_failure_at).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.last_error.clone()).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.status()).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.circuit.as_str()).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.circuit_opened_at).collect::<Vec<_>>().into(),
        ],
    )?;
    let open = rows
        .iter()
        .filter(|(_, h)| h.circuit != CircuitState::Closed)
        .map(|(id, _)| *id)
        .collect();
    // Rows not loaded: held by another session, or their endpoint is gone.
    let missing: Vec<i64> = ids
        .into_iter()
        .filter(|id| !rows.contains_key(id))
        .collect();
    let held: HashSet<i64> = if missing.is_empty() || lock == HealthLock::Wait {
        HashSet::new()
    } else {
        plans::execute(
            client,
            "SELECT webhook_id FROM webhook_outbox.health_metrics WHERE webhook_id OPERATOR(pg_catalog.=) ANY ($1)",
            &[missing.into()],
        )?
        .map(|row| row.get::<i64>(1).map(Option::unwrap_or_default))
        .collect::<spi::Result<_>>()?
    };
    let skipped = events
        .iter()
        .filter(|e| held.contains(&e.endpoint_id))
        .cloned()
        .collect();
    Ok((open, skipped))
}

/// Put claimed deliveries back without counting an attempt (rate limit,
/// shutdown, an endpoint whose circuit opened meanwhile, a job too late to
/// start): each becomes due at its `at_ms` (Unix milliseconds; 0 = now).
pub fn release(client: &mut SpiClient<'_>, deliveries: &[(Ticket, i64)]) -> spi::Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    plans::execute(
        client,
        "UPDATE webhook_outbox.deliveries d
         SET attempt_count = d.attempt_count OPERATOR(pg_catalog.-) 1,
             locked_until = NULL,
             next_attempt_at = GREATEST(webhook_outbox._from_epoch_ms(r.at_ms), pg_catalog.now())
         FROM unnest($1::bigint[], $2::pg_catalog.uuid[], $3::bigint[]) AS r(id, lease, at_ms)
         WHERE d.id OPERATOR(pg_catalog.=) r.id AND d.locked_until IS NOT NULL -- as in settle()
           AND d.lease_token OPERATOR(pg_catalog.=) r.lease",
        &[
            deliveries
                .iter()
                .map(|d| d.0.delivery_id)
                .collect::<Vec<_>>()
                .into(),
            deliveries
                .iter()
                .map(|d| pgrx::Uuid::from_bytes(d.0.lease))
                .collect::<Vec<_>>()
                .into(),
            deliveries.iter().map(|d| d.1).collect::<Vec<_>>().into(),
        ],
    )?;
    Ok(())
}

/// The longest error text kept in attempts, deliveries and health_metrics:
/// receivers (and external workers) choose what it says, not how much is stored.
pub const MAX_ERROR_BYTES: usize = 1024;

pub fn bounded(error: &str) -> String {
    let mut text = error.to_owned();
    crate::delivery::truncate(&mut text, MAX_ERROR_BYTES);
    text
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
