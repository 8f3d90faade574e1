//! Results back into the outbox, in the current transaction, in set-wise
//! statements (one per batch, not one per row). The retry rules come from
//! `outcome`, the health and breaker rules from `circuit` (both in
//! `webhook_outbox_core`): `health` folds results into `health_metrics`,
//! `release` puts claimed deliveries back untried.

mod health;
mod release;

pub use health::{record_health, HealthEvent, HealthLock};
pub use release::release;

use crate::{guc, pg};
use pgrx::spi::{self, SpiClient};
use std::collections::{HashMap, HashSet};
use webhook_outbox_core::outcome::{self, Class, Verdict};

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
    /// Why it failed (`FailureClass::as_str`); `None` for a success.
    pub failure_class: Option<&'static str>,
    /// The address the request went to, when a connection was made.
    pub remote_addr: Option<String>,
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
    // 410 Gone: the endpoint is disabled and the delivery waits
    // (Verdict::Gone). An endpoint whose row another session holds stays
    // enabled for now: its 410 is retried like any failure, never at once.
    let mut classes: Vec<Class> = results
        .iter()
        .map(|r| outcome::classify(r.status_code, r.permanent))
        .collect();
    let gone: Vec<(i64, String)> = results
        .iter()
        .zip(&classes)
        .filter(|(_, c)| **c == Class::Gone)
        .map(|(r, _)| (r.endpoint_id, "the receiver answered 410 Gone".to_owned()))
        .collect();
    let disabled = disable_endpoints(client, &gone)?;
    for (r, class) in results.iter().zip(classes.iter_mut()) {
        if *class == Class::Gone && !disabled.contains(&r.endpoint_id) {
            *class = Class::Transient;
        }
    }
    let retried: Vec<i64> = results
        .iter()
        .zip(&classes)
        .filter(|(r, c)| **c == Class::Transient && r.attempt_no < r.max_attempts)
        .map(|(r, _)| r.endpoint_id)
        .collect();
    let schedules = own_schedules(client, retried)?;
    let verdicts: Vec<Verdict> = results
        .iter()
        .zip(&classes)
        .map(|(r, class)| {
            outcome::decide(
                *class,
                r.attempt_no,
                r.max_attempts,
                r.retry_after_ms,
                &policy,
                schedules.get(&r.endpoint_id).map(Vec::as_slice),
                outcome::jitter(),
            )
        })
        .collect();
    let column =
        |f: &dyn Fn(&AttemptResult) -> Option<String>| results.iter().map(f).collect::<Vec<_>>();
    // A status without an error text still gets one, for v_dead_letters and last_error.
    let error_text = |r: &AttemptResult| outcome::error_text(r.status_code, r.error.as_deref());
    let settled = pg::execute(
        client,
        include_str!("../../sql/queries/settle.sql"),
        &[
            results
                .iter()
                .map(|r| r.delivery_id)
                .collect::<Vec<_>>()
                .into(),
            verdicts
                .iter()
                .map(|v| v.status())
                .collect::<Vec<_>>()
                .into(),
            results
                .iter()
                .map(|r| r.status_code)
                .collect::<Vec<_>>()
                .into(),
            column(&error_text).into(),
            results
                .iter()
                .map(|r| r.duration_ms)
                .collect::<Vec<_>>()
                .into(),
            verdicts
                .iter()
                .map(|v| match v {
                    Verdict::Retry { delay_ms } => Some(*delay_ms as i64),
                    // Due at once: it waits on its disabled endpoint instead.
                    Verdict::Gone => Some(0),
                    Verdict::Sent | Verdict::Dead => None,
                })
                .collect::<Vec<_>>()
                .into(),
            column(&|r| r.response_body.clone()).into(),
            results
                .iter()
                .map(|r| r.attempt_no)
                .collect::<Vec<_>>()
                .into(),
            results
                .iter()
                .map(|r| r.endpoint_id)
                .collect::<Vec<_>>()
                .into(),
            results
                .iter()
                .map(|r| pgrx::Uuid::from_bytes(r.lease))
                .collect::<Vec<_>>()
                .into(),
            results
                .iter()
                .map(|r| r.failure_class)
                .collect::<Vec<_>>()
                .into(),
            column(&|r| r.remote_addr.clone()).into(),
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
                .map(|r| {
                    HealthEvent::of(
                        r.endpoint_id,
                        r.status_code,
                        r.permanent,
                        r.duration_ms,
                        r.error.as_deref(),
                    )
                }),
        )
        .collect();
    let (open_circuits, skipped_health) = record_health(client, &health, lock)?;
    // Operators hear of every delivery that went dead.
    let dead: Vec<i64> = statuses
        .iter()
        .filter(|(_, status)| *status == "dead")
        .map(|(id, _)| *id)
        .collect();
    if !dead.is_empty() {
        pg::execute(
            client,
            include_str!("../../sql/queries/exhausted.sql"),
            &[dead.into()],
        )?;
    }
    let stale = results.len() - statuses.len();
    Ok(Settled {
        statuses,
        stale,
        open_circuits,
        skipped_health,
    })
}

/// The retry schedules of those `endpoints` that have their own, in
/// milliseconds (one query, and none when nothing is retried).
fn own_schedules(
    client: &mut SpiClient<'_>,
    mut endpoints: Vec<i64>,
) -> spi::Result<HashMap<i64, Vec<u64>>> {
    endpoints.sort_unstable();
    endpoints.dedup();
    if endpoints.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = pg::execute(
        client,
        include_str!("../../sql/queries/retry_schedules.sql"),
        &[endpoints.into()],
    )?;
    let mut schedules = HashMap::new();
    for row in rows {
        let steps = row
            .get::<Vec<Option<pgrx::datum::Interval>>>(2)?
            .unwrap_or_default();
        schedules.insert(
            row.get::<i64>(1)?.unwrap_or_default(),
            steps
                .iter()
                .flatten()
                .map(|i| pg::interval_ms(i).max(1) as u64)
                .collect(),
        );
    }
    Ok(schedules)
}

/// Disable endpoints, each with its reason (audited in endpoint_changes like
/// an operator's disable_endpoint()). One held by another session is left
/// for the next result: a settle never waits on an operator's transaction.
/// Returns those that are disabled now.
pub(crate) fn disable_endpoints(
    client: &mut SpiClient<'_>,
    endpoints: &[(i64, String)],
) -> spi::Result<HashSet<i64>> {
    if endpoints.is_empty() {
        return Ok(HashSet::new());
    }
    pg::execute(
        client,
        include_str!("../../sql/queries/disable_endpoints.sql"),
        &[
            endpoints
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
                .into(),
            endpoints
                .iter()
                .map(|(_, reason)| reason.as_str())
                .collect::<Vec<_>>()
                .into(),
        ],
    )?
    .map(|row| row.get::<i64>(1).map(Option::unwrap_or_default))
    .collect()
}
