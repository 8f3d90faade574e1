//! `create_endpoint` and `update_endpoint`: the endpoint functions whose checks
//! need Rust (URL policy, secrets, headers). The rest of the lifecycle
//! (disable, enable, delete, the audit trail) is SQL: sql/endpoints.sql.

use crate::guc;
use crate::pg::{error, invalid, not_null, spi_error};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use webhook_outbox_core::ratelimit::{MAX_RPS, MIN_RPS};
use webhook_outbox_core::{delivery, outcome};

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn create_endpoint(
    url: Option<&str>,
    name: default!(Option<&str>, "NULL"),
    event_types: default!(Option<Vec<Option<String>>>, "NULL"),
    secret: default!(Option<&str>, "NULL"),
    rate_limit_rps: default!(Option<f64>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    headers: default!(Option<JsonB>, "'{}'"),
    retry_schedule: default!(Option<&str>, "NULL"),
    signing: default!(Option<&str>, "NULL"),
) -> Result<i64, ErrorReport> {
    let url = url.ok_or_else(|| not_null("url", ""))?;
    check_url(url)?;
    check_name(name, None)?;
    let event_types = check_event_types(event_types)?;
    let secret = match (secret, signing) {
        (Some(s), signing) => {
            let scheme = check_secret(s)?.scheme();
            if signing.is_some_and(|wanted| wanted != scheme) {
                return Err(invalid(
                    format!("the secret given signs {scheme}, not {}", signing.unwrap_or_default()),
                    "Give a whsec_ secret for v1 (HMAC), a whsk_ key for v1a (ed25519), or no secret to have one generated.",
                ));
            }
            s.to_owned()
        }
        (None, None | Some("v1")) => delivery::generate_secret(),
        (None, Some("v1a")) => delivery::generate_ed25519_secret(),
        (None, Some(other)) => {
            return Err(invalid(
                format!("signing must be v1 (HMAC-SHA256) or v1a (ed25519), got \"{other}\""),
                "",
            ))
        }
    };
    check_rate(rate_limit_rps)?;
    check_attempts(max_attempts)?;
    let headers = headers
        .map(|h| h.0)
        .unwrap_or_else(|| serde_json::json!({}));
    check_headers(&headers)?;
    let retry_schedule = retry_schedule.map(check_schedule).transpose()?;
    Spi::get_one_with_args::<i64>(
        "WITH e AS (
             INSERT INTO webhook_outbox.endpoints (url, name, event_types, secret, rate_limit_rps, max_attempts, headers,
                                                   retry_schedule)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.interval[])
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
            retry_schedule.into(),
        ],
    )
    .map_err(spi_error)?
    .ok_or_else(|| error(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "endpoint insert returned no id", ""))
}

/// What `update_endpoint(reset => ...)` may put back to its default.
const RESETTABLE: [&str; 6] = [
    "name",
    "event_types",
    "rate_limit_rps",
    "max_attempts",
    "headers",
    "retry_schedule",
];

/// Changes the fields given (NULL: unchanged) and puts those named in
/// `reset` back to their defaults, with `create_endpoint`'s checks; never
/// the secret.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn update_endpoint(
    endpoint_id: Option<i64>,
    url: default!(Option<&str>, "NULL"),
    name: default!(Option<&str>, "NULL"),
    event_types: default!(Option<Vec<Option<String>>>, "NULL"),
    rate_limit_rps: default!(Option<f64>, "NULL"),
    max_attempts: default!(Option<i32>, "NULL"),
    headers: default!(Option<JsonB>, "NULL"),
    reset: default!(Option<Vec<Option<String>>>, "NULL"),
    retry_schedule: default!(Option<&str>, "NULL"),
) -> Result<bool, ErrorReport> {
    let id = endpoint_id.ok_or_else(|| not_null("endpoint_id", ""))?;
    let reset = reset
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            f.filter(|f| RESETTABLE.contains(&f.as_str()))
                .ok_or_else(|| {
                    invalid(
                    "reset names a field that has no default",
                    "reset may name name, event_types, rate_limit_rps, max_attempts, headers and retry_schedule.",
                )
                })
        })
        .collect::<Result<Vec<String>, _>>()?;
    let given = [
        ("name", name.is_some()),
        ("event_types", event_types.is_some()),
        ("rate_limit_rps", rate_limit_rps.is_some()),
        ("max_attempts", max_attempts.is_some()),
        ("headers", headers.is_some()),
        ("retry_schedule", retry_schedule.is_some()),
    ];
    if let Some((field, _)) = given
        .iter()
        .find(|(f, set)| *set && reset.iter().any(|r| r == f))
    {
        return Err(invalid(
            format!("{field} is both given and reset"),
            "Give a new value, or reset it to its default, not both.",
        ));
    }
    if let Some(url) = url {
        check_url(url)?;
    }
    check_name(name, Some(id))?;
    let event_types = check_event_types(event_types)?;
    check_rate(rate_limit_rps)?;
    check_attempts(max_attempts)?;
    let headers = headers.map(|h| h.0);
    if let Some(h) = &headers {
        check_headers(h)?;
    }
    let retry_schedule = retry_schedule.map(check_schedule).transpose()?;
    // Locked (and found, and not deleted) before it is changed.
    Spi::run_with_args("SELECT webhook_outbox._lock_endpoint($1)", &[id.into()])
        .map_err(spi_error)?;
    // Only the columns given or reset are assigned: assigning even the same
    // value to name (unique, so a key) would count as a key update, and
    // hold every enqueue() to this endpoint (its foreign key's share lock)
    // until the caller commits. Written only when something differs: an
    // unchanged endpoint gets no audit row and keeps emit()'s route caches.
    let columns = [
        ("url", "$2", url.is_some()),
        ("name", "$3", name.is_some()),
        ("event_types", "$4", event_types.is_some()),
        ("rate_limit_rps", "$5", rate_limit_rps.is_some()),
        ("max_attempts", "$6", max_attempts.is_some()),
        ("headers", "$7", headers.is_some()),
        (
            "retry_schedule",
            "$8::pg_catalog.interval[]",
            retry_schedule.is_some(),
        ),
    ];
    let assigned: Vec<(&str, &str)> = columns
        .iter()
        .filter_map(
            |&(column, param, given)| match (given, reset.iter().any(|r| r == column)) {
                (true, _) => Some((column, param)),
                (false, true) if column == "headers" => Some((column, "'{}'::pg_catalog.jsonb")),
                (false, true) => Some((column, "NULL")),
                (false, false) => None,
            },
        )
        .collect();
    if assigned.is_empty() {
        return Ok(false);
    }
    let list =
        |f: &dyn Fn(&(&str, &str)) -> String| assigned.iter().map(f).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "WITH changed AS (
             UPDATE webhook_outbox.endpoints e SET {}
             WHERE e.id OPERATOR(pg_catalog.=) $1 AND ROW({}) IS DISTINCT FROM ROW({})
             RETURNING 1
         )
         SELECT pg_catalog.count(*) FROM changed",
        list(&|(c, v)| format!("{c} = {v}")),
        list(&|(c, _)| format!("e.{c}")),
        list(&|(_, v)| v.to_string()),
    );
    let changed = Spi::get_one_with_args::<i64>(
        &sql,
        &[
            id.into(),
            url.into(),
            name.into(),
            event_types.into(),
            rate_limit_rps.into(),
            max_attempts.into(),
            headers.map(JsonB).into(),
            retry_schedule.into(),
        ],
    )
    .map_err(spi_error)?;
    Ok(changed.unwrap_or(0) > 0)
}

/// Replaces the endpoint's secret (see its COMMENT in sql/endpoints.sql);
/// returns what the receiver needs: the new `whsec_` secret, or the `whpk_`
/// public key of a `whsk_` one.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
fn rotate_secret(
    endpoint_id: Option<i64>,
    new_secret: default!(Option<&str>, "NULL"),
    overlap: default!(Option<pgrx::datum::Interval>, "'24 hours'"),
) -> Result<String, ErrorReport> {
    let id = endpoint_id.ok_or_else(|| not_null("endpoint_id", ""))?;
    let overlap = overlap.ok_or_else(|| not_null("overlap", "Give 0 for no overlap."))?;
    let overlap_ms = crate::pg::interval_ms(&overlap);
    if !(0..=MAX_OVERLAP_MS).contains(&overlap_ms) {
        return Err(invalid(
            "overlap must be between 0 and 30 days",
            "The old secret signs as well for this long; 24 hours gives receivers a day to switch.",
        ));
    }
    let current = Spi::get_one_with_args::<String>(
        "SELECT secret FROM webhook_outbox._lock_endpoint($1)",
        &[id.into()],
    )
    .map_err(spi_error)?
    .unwrap_or_default();
    let new_secret =
        new_secret.map_or_else(|| delivery::generate_secret_like(&current), str::to_owned);
    let key = check_secret(&new_secret)?;
    if new_secret == current {
        return Err(invalid(
            "new_secret is the endpoint's current secret",
            "Give another secret, or NULL to have one generated.",
        ));
    }
    Spi::run_with_args(
        "SELECT webhook_outbox._rotate_secret($1, $2, $3)",
        &[id.into(), new_secret.as_str().into(), overlap.into()],
    )
    .map_err(spi_error)?;
    Ok(key.public_key().unwrap_or(new_secret))
}

/// The longest `rotate_secret` overlap.
const MAX_OVERLAP_MS: i64 = 30 * 86_400_000;

/// The `whpk_` public key of a `whsk_` secret; NULL for anything else.
#[pg_extern(immutable, strict, parallel_safe)]
fn _public_key(secret: &str) -> Option<String> {
    delivery::decode_secret(secret).ok()?.public_key()
}

fn check_secret(secret: &str) -> Result<delivery::SigningKey, ErrorReport> {
    delivery::decode_secret(secret).map_err(|e| invalid(e.to_string(), ""))
}

fn check_url(url: &str) -> Result<(), ErrorReport> {
    delivery::validate_url(url, guc::allow_http())
        .map(drop)
        .map_err(|e| {
            invalid(
                e.to_string(),
                "Give an absolute https:// URL such as https://example.com/webhooks.",
            )
        })
}

/// A name is optional, never blank, and unique among endpoints (`except`:
/// the one being renamed).
fn check_name(name: Option<&str>, except: Option<i64>) -> Result<(), ErrorReport> {
    let Some(n) = name else { return Ok(()) };
    if n.trim().is_empty() {
        return Err(invalid(
            "endpoint name must not be empty",
            "Use NULL for an unnamed endpoint.",
        ));
    }
    let taken = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM webhook_outbox.endpoints
                        WHERE name OPERATOR(pg_catalog.=) $1 AND id IS DISTINCT FROM $2)",
        &[n.into(), except.into()],
    )
    .map_err(spi_error)?;
    if taken == Some(true) {
        return Err(error(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!("an endpoint named \"{n}\" already exists"),
            "Choose another name, or update the existing endpoint.",
        ));
    }
    Ok(())
}

fn check_event_types(
    event_types: Option<Vec<Option<String>>>,
) -> Result<Option<Vec<String>>, ErrorReport> {
    match event_types {
        None => Ok(None),
        Some(types) if types.is_empty() => Err(invalid(
            "event_types is an empty array: the endpoint would receive nothing",
            "Use NULL to subscribe to every event type.",
        )),
        Some(types) => types
            .into_iter()
            .map(|t| t.filter(|t| !t.trim().is_empty()))
            .collect::<Option<Vec<String>>>()
            .map(Some)
            .ok_or_else(|| invalid("event_types must not contain NULL or empty names", "")),
    }
}

fn check_rate(rate_limit_rps: Option<f64>) -> Result<(), ErrorReport> {
    match rate_limit_rps {
        Some(rps) if !(rps == 0.0 || (MIN_RPS..=MAX_RPS).contains(&rps)) => Err(invalid(
            format!("rate_limit_rps must be 0 (unlimited) or between {MIN_RPS} and {MAX_RPS}, got {rps}"),
            "Give requests per second, e.g. 10; NULL for the webhook_outbox.rate_limit_rps default.",
        )),
        _ => Ok(()),
    }
}

/// A retry schedule as `retry_schedule` writes it ('5s,5m,30m'), as the
/// intervals the endpoint keeps.
fn check_schedule(schedule: &str) -> Result<Vec<String>, ErrorReport> {
    outcome::parse_schedule(schedule)
        .map(|steps| steps.iter().map(|ms| format!("{ms} milliseconds")).collect())
        .map_err(|e| {
            invalid(
                e,
                "Give delays separated by commas, e.g. '5s,5m,30m,2h'; NULL for webhook_outbox.retry_schedule.",
            )
        })
}

fn check_attempts(max_attempts: Option<i32>) -> Result<(), ErrorReport> {
    match max_attempts {
        Some(n) if !(1..=100).contains(&n) => Err(invalid(
            format!("max_attempts must be between 1 and 100, got {n}"),
            "",
        )),
        _ => Ok(()),
    }
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
