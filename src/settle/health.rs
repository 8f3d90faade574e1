//! Endpoint health: each result folded into the endpoint's `health_metrics`
//! row by `circuit::Health::record`, for every endpoint of a batch at once.

use crate::{guc, pg};
use pgrx::spi::{self, SpiClient};
use std::collections::{BTreeMap, HashSet};
use webhook_outbox_core::circuit::{CircuitState, Health};
use webhook_outbox_core::now_ms;
use webhook_outbox_core::outcome::{bounded, classify, Class};

/// One result as endpoint health sees it.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    pub endpoint_id: i64,
    pub success: bool,
    pub status_code: Option<i32>,
    pub response_ms: Option<f64>,
    pub error: Option<String>,
}

impl HealthEvent {
    /// A result as health sees it: success as `outcome::classify` says.
    pub fn of(
        endpoint_id: i64,
        status_code: Option<i32>,
        permanent: bool,
        response_ms: Option<i32>,
        error: Option<&str>,
    ) -> HealthEvent {
        HealthEvent {
            endpoint_id,
            success: classify(status_code, permanent) == Class::Success,
            status_code,
            response_ms: response_ms.map(f64::from),
            error: error.map(bounded),
        }
    }
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

/// Fold results into `health_metrics`: rows locked in id order (no deadlock
/// between workers), updated in Rust, written back in one statement; an
/// endpoint failing for `auto_disable_after` is disabled. Returns the
/// endpoints whose circuit is not closed afterwards, and the events of
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
        HealthLock::Wait => concat!(
            include_str!("../../sql/queries/load_health.sql"),
            " FOR UPDATE"
        ),
        HealthLock::SkipLocked => {
            concat!(
                include_str!("../../sql/queries/load_health.sql"),
                " FOR UPDATE SKIP LOCKED"
            )
        }
    };
    let loaded = pg::execute(client, sql, &[ids.clone().into()])?;
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
                failing_since: row.get(13)?,
            },
        );
    }
    let now = now_ms();
    let policy = guc::breaker_policy();
    let before = rows.clone();
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
    pg::execute(
        client,
        include_str!("../../sql/queries/store_health.sql"),
        &[
            rows.keys().copied().collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.total).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.successful).collect::<Vec<_>>().into(),
            hs.iter().map(|h| h.failed).collect::<Vec<_>>().into(),
            hs.iter()
                .map(|h| h.consecutive_failures)
                .collect::<Vec<_>>()
                .into(),
            hs.iter()
                .map(|h| h.avg_response_ms)
                .collect::<Vec<_>>()
                .into(),
            hs.iter()
                .map(|h| h.last_status_code)
                .collect::<Vec<_>>()
                .into(),
            hs.iter()
                .map(|h| h.last_success_at)
                .collect::<Vec<_>>()
                .into(),
            hs.iter()
                .map(|h| h.last_failure_at)
                .collect::<Vec<_>>()
                .into(),
            hs.iter()
                .map(|h| h.last_error.clone())
                .collect::<Vec<_>>()
                .into(),
            hs.iter().map(|h| h.status()).collect::<Vec<_>>().into(),
            hs.iter()
                .map(|h| h.circuit.as_str())
                .collect::<Vec<_>>()
                .into(),
            hs.iter()
                .map(|h| h.circuit_opened_at)
                .collect::<Vec<_>>()
                .into(),
            hs.iter()
                .map(|h| h.failing_since)
                .collect::<Vec<_>>()
                .into(),
        ],
    )?;
    let open = rows
        .iter()
        .filter(|(_, h)| h.circuit != CircuitState::Closed)
        .map(|(id, _)| *id)
        .collect();
    let after = guc::auto_disable_after_ms();
    let failing: Vec<(i64, String)> = rows
        .iter()
        .filter(|(_, h)| h.failing_too_long(now, after))
        .map(|(id, h)| {
            let days = (now - h.failing_since.unwrap_or(now)) as f64 / 86_400_000.0;
            (*id, format!("failing for {days:.1} days without a success (webhook_outbox.auto_disable_after)"))
        })
        .collect();
    super::disable_endpoints(client, &failing)?;
    let failing_after = guc::failing_after();
    let notices: Vec<(&str, i64, serde_json::Value)> = rows
        .iter()
        .flat_map(|(id, h)| {
            let was = &before[id];
            h.notices(was, failing_after).into_iter().map(move |kind| {
                let data = serde_json::json!({
                    "consecutive_failures": h.consecutive_failures,
                    "last_status_code": h.last_status_code,
                    "last_error": h.last_error,
                });
                (kind, *id, data)
            })
        })
        .collect();
    if !notices.is_empty() {
        pg::execute(
            client,
            include_str!("../../sql/queries/operational_events.sql"),
            &[
                notices.iter().map(|n| n.0).collect::<Vec<_>>().into(),
                notices.iter().map(|n| n.1).collect::<Vec<_>>().into(),
                notices
                    .iter()
                    .map(|n| pgrx::JsonB(n.2.clone()))
                    .collect::<Vec<_>>()
                    .into(),
            ],
        )?;
    }
    // Rows not loaded: held by another session, or their endpoint is gone.
    let missing: Vec<i64> = ids
        .into_iter()
        .filter(|id| !rows.contains_key(id))
        .collect();
    let held: HashSet<i64> = if missing.is_empty() || lock == HealthLock::Wait {
        HashSet::new()
    } else {
        pg::execute(
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
