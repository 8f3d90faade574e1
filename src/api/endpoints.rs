//! `create_endpoint`: the one API function whose checks need Rust (URL policy, secrets).

use crate::guc;
use crate::pg::{error, invalid, spi_error};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use webhook_outbox_core::delivery;
use webhook_outbox_core::ratelimit::{MAX_RPS, MIN_RPS};

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
fn create_endpoint(
    url: Option<&str>,
    name: default!(Option<&str>, "NULL"),
    event_types: default!(Option<Vec<Option<String>>>, "NULL"),
    secret: default!(Option<&str>, "NULL"),
    rate_limit_rps: default!(Option<f64>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    headers: default!(Option<JsonB>, "'{}'"),
) -> Result<i64, ErrorReport> {
    let url = url.ok_or_else(|| {
        error(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "url must not be NULL",
            "",
        )
    })?;
    delivery::validate_url(url, guc::allow_http()).map_err(|e| {
        invalid(
            e.to_string(),
            "Give an absolute https:// URL such as https://example.com/webhooks.",
        )
    })?;
    if name.is_some_and(|n| n.trim().is_empty()) {
        return Err(invalid(
            "endpoint name must not be empty",
            "Use NULL for an unnamed endpoint.",
        ));
    }
    let event_types = match event_types {
        None => None,
        Some(types) if types.is_empty() => {
            return Err(invalid(
                "event_types is an empty array: the endpoint would receive nothing",
                "Use NULL to subscribe to every event type.",
            ))
        }
        Some(types) => Some(
            types
                .into_iter()
                .map(|t| t.filter(|t| !t.trim().is_empty()))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| invalid("event_types must not contain NULL or empty names", ""))?,
        ),
    };
    let secret = match secret {
        Some(s) => {
            delivery::validate_secret(s).map_err(|e| invalid(e.to_string(), ""))?;
            s.to_owned()
        }
        None => delivery::generate_secret(),
    };
    if let Some(rps) = rate_limit_rps {
        if !(rps == 0.0 || (MIN_RPS..=MAX_RPS).contains(&rps)) {
            return Err(invalid(
                format!("rate_limit_rps must be 0 (unlimited) or between {MIN_RPS} and {MAX_RPS}, got {rps}"),
                "Give requests per second, e.g. 10; NULL for the webhook_outbox.rate_limit_rps default.",
            ));
        }
    }
    if let Some(n) = max_attempts {
        if !(1..=100).contains(&n) {
            return Err(invalid(
                format!("max_attempts must be between 1 and 100, got {n}"),
                "",
            ));
        }
    }
    let headers = headers
        .map(|h| h.0)
        .unwrap_or_else(|| serde_json::json!({}));
    check_headers(&headers)?;

    if let Some(n) = name {
        let taken = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM webhook_outbox.endpoints WHERE name = $1)",
            &[n.into()],
        )
        .map_err(spi_error)?;
        if taken == Some(true) {
            return Err(error(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!("an endpoint named \"{n}\" already exists"),
                "Choose another name, or update the existing endpoint.",
            ));
        }
    }
    Spi::get_one_with_args::<i64>(
        "WITH e AS (
             INSERT INTO webhook_outbox.endpoints (url, name, event_types, secret, rate_limit_rps, max_attempts, headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id
         ), h AS (
             INSERT INTO webhook_outbox.health_metrics (webhook_id) SELECT id FROM e
         )
         SELECT id FROM e",
        &[
            url.into(),
            name.into(),
            event_types.into(),
            secret.as_str().into(),
            rate_limit_rps.into(),
            max_attempts.into(),
            JsonB(headers).into(),
        ],
    )
    .map_err(spi_error)?
    .ok_or_else(|| error(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "endpoint insert returned no id", ""))
}

fn check_headers(headers: &serde_json::Value) -> Result<(), ErrorReport> {
    let hint =
        "Give headers as a JSON object of strings, e.g. '{\"Authorization\": \"Bearer ...\"}'.";
    let map = headers
        .as_object()
        .ok_or_else(|| invalid("headers must be a JSON object", hint))?;
    for (name, value) in map {
        let value = value
            .as_str()
            .ok_or_else(|| invalid(format!("header \"{name}\" must have a string value"), hint))?;
        delivery::validate_header(name, value).map_err(|e| invalid(e, ""))?;
    }
    Ok(())
}
