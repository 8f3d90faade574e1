//! External workers: the signature headers `get_ready_deliveries` hands them
//! (`_webhook_headers`, so that secrets never leave the database), and
//! reporting results: `record_attempt`, and `update_webhook_health` for
//! health alone. Both go through `settle`, the same code the background
//! worker uses.

use crate::pg::{error, interval_ms, invalid, not_null, spi_error};
use crate::settle::{self, AttemptResult, HealthEvent};
use pgrx::datum::Interval;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

fn check_result(
    status_code: Option<i32>,
    response_time_ms: Option<i32>,
) -> Result<(), ErrorReport> {
    if let Some(code) = status_code {
        if !(100..=599).contains(&code) {
            return Err(invalid(
                format!("status_code must be an HTTP status (100-599), got {code}"),
                "Pass NULL for a network error and describe it in error.",
            ));
        }
    }
    if let Some(ms) = response_time_ms {
        if ms < 0 {
            return Err(invalid(
                format!("response_time_ms must be >= 0, got {ms}"),
                "",
            ));
        }
    }
    Ok(())
}

/// The Standard Webhooks headers of one attempt, signed now with the
/// endpoint's secret and those of a rotation still in their overlap, as the
/// worker signs: `{"webhook-id", "webhook-timestamp", "webhook-signature"}`.
/// Called by `get_ready_deliveries` for each row it hands out. NULL when a
/// stored secret does not decode (written by hand): that row cannot be signed,
/// and an ERROR would stop every claim behind it.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn _webhook_headers(
    event_id: &str,
    body: &str,
    secret: &str,
    retired: Vec<Option<String>>,
) -> Option<pgrx::JsonB> {
    let retired: Vec<String> = retired.into_iter().flatten().collect();
    let keys = crate::pipeline::signing_keys(secret, &retired).ok()?;
    let timestamp = webhook_outbox_core::now_ms() / 1_000;
    Some(pgrx::JsonB(serde_json::json!({
        "webhook-id": event_id,
        "webhook-timestamp": timestamp.to_string(),
        "webhook-signature": webhook_outbox_core::delivery::sign(&keys, event_id, timestamp, body.as_bytes()),
    })))
}

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
fn record_attempt(
    delivery_id: Option<i64>,
    lease_token: Option<pgrx::Uuid>,
    status_code: Option<i32>,
    response_time_ms: Option<i32>,
    error: default!(Option<&str>, "NULL"),
    retry_after: default!(Option<Interval>, "NULL"),
    failure_class: default!(Option<&str>, "NULL"),
) -> Result<String, ErrorReport> {
    let delivery_id = delivery_id.ok_or_else(|| not_null("delivery_id", ""))?;
    let lease_token = lease_token.ok_or_else(|| {
        not_null(
            "lease_token",
            "Pass the lease_token column of the row get_ready_deliveries() returned.",
        )
    })?;
    check_result(status_code, response_time_ms)?;
    let failure_class =
        webhook_outbox_core::delivery::FailureClass::of_reported(status_code, failure_class)
            .map_err(|message| invalid(message, ""))?;
    let retry_after_ms = match retry_after.as_ref().map(interval_ms) {
        Some(ms) if ms < 0 => return Err(invalid("retry_after must not be negative", "")),
        other => other.map(|ms| ms as u64),
    };
    Spi::connect_mut(|client| {
        let row = client
            .update(
                "SELECT endpoint_id, attempt_count, max_attempts, status, locked_until IS NOT NULL,
                        webhook_outbox._held_by(locked_until, lease_token, $2)
                 FROM webhook_outbox.deliveries WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
                None,
                &[delivery_id.into(), lease_token.into()],
            )
            .map_err(spi_error)?;
        let Some(row) = row.into_iter().next() else {
            return Err(crate::pg::error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("delivery {delivery_id} does not exist"),
                "",
            ));
        };
        let status: String = row.get(4).map_err(spi_error)?.unwrap_or_default();
        if row.get::<bool>(5).map_err(spi_error)? != Some(true) {
            return Err(crate::pg::error(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("delivery {delivery_id} is {status}, not sending"),
                "Claim deliveries with webhook_outbox.get_ready_deliveries() before recording their attempts.",
            ));
        }
        // The rule settle applies (_held_by): checked here first to say why.
        if row.get::<bool>(6).map_err(spi_error)? != Some(true) {
            return Err(crate::pg::error(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("delivery {delivery_id} is not leased under this lease_token"),
                "The lease ended and the delivery was claimed again (by you or another worker): nothing was recorded. \
                 Report only results of your current claim, before its lease ends.",
            ));
        }
        let result = AttemptResult {
            delivery_id,
            endpoint_id: row.get(1).map_err(spi_error)?.unwrap_or_default(),
            attempt_no: row.get(2).map_err(spi_error)?.unwrap_or_default(),
            max_attempts: row.get(3).map_err(spi_error)?.unwrap_or_default(),
            lease: *lease_token.as_bytes(),
            status_code,
            duration_ms: response_time_ms,
            error: error.map(str::to_owned),
            retry_after_ms,
            permanent: false,
            response_body: None,
            failure_class: failure_class.map(|c| c.as_str()),
            remote_addr: None,
        };
        let settled =
            settle::settle(client, &[result], settle::HealthLock::Wait, &[]).map_err(spi_error)?;
        Ok(settled
            .statuses
            .first()
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| status.clone()))
    })
}

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
fn _update_webhook_health(
    endpoint_id: Option<i64>,
    status_code: Option<i32>,
    response_time_ms: Option<i32>,
    error: Option<&str>,
) -> Result<(), ErrorReport> {
    // Named as update_webhook_health(webhook_id, ...) calls it.
    let endpoint_id = endpoint_id.ok_or_else(|| not_null("webhook_id", ""))?;
    check_result(status_code, response_time_ms)?;
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM webhook_outbox.health_metrics WHERE webhook_id OPERATOR(pg_catalog.=) $1)",
        &[endpoint_id.into()],
    )
    .map_err(spi_error)?;
    if exists != Some(true) {
        return Err(self::error_undefined_endpoint(endpoint_id));
    }
    let event = HealthEvent::of(endpoint_id, status_code, false, response_time_ms, error);
    Spi::connect_mut(|client| {
        settle::record_health(client, &[event], settle::HealthLock::Wait).map(drop)
    })
    .map_err(spi_error)
}

fn error_undefined_endpoint(id: i64) -> ErrorReport {
    error(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("endpoint {id} does not exist"),
        "List endpoints with SELECT id, name, url FROM webhook_outbox.endpoints.",
    )
}
