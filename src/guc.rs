//! Every `webhook_outbox.*` setting, in one place.
//!
//! Contexts follow purpose: `Postmaster` for what sizes shared memory or the
//! number of workers, `Sighup` for the worker's tunables (read again after
//! `pg_reload_conf()`), `Suset` for what a superuser may also change per
//! session (so `run_once` and tests see it), with `SUPERUSER_ONLY` for the
//! security settings.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CString;

/// Whether events are recorded and sent.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// `enqueue`/`emit` create nothing.
    #[name = c"off"]
    Off,
    /// Rows are written with status `shadow` and never sent.
    #[name = c"shadow"]
    Shadow,
    /// Rows are written `pending` and delivered.
    #[name = c"on"]
    On,
}

/// Upper bound of `webhook_outbox.workers`: shared memory keeps one slot each.
pub const MAX_WORKERS: usize = 16;

static MODE: GucSetting<Mode> = GucSetting::<Mode>::new(Mode::On);
static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(0);
static RETRY_SCHEDULE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"5s,5m,30m,2h,5h,10h,10h"));
static RETRY_AFTER_MAX_S: GucSetting<i32> = GucSetting::<i32>::new(3_600);
static CIRCUIT_FAILURE_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(5);
static CIRCUIT_OPEN_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(60);
static AUTO_DISABLE_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(5 * 86_400);
static FAILING_AFTER: GucSetting<i32> = GucSetting::<i32>::new(3);
static OPERATIONS_ENDPOINT: GucSetting<i32> = GucSetting::<i32>::new(0);
static ALLOW_HTTP: GucSetting<bool> = GucSetting::<bool>::new(false);
static MAX_PAYLOAD_BYTES: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);

static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(1);
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(500);
static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(16);
static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
static HTTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
static CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2_000);
static LEASE_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
static RATE_LIMIT_RPS: GucSetting<f64> = GucSetting::<f64>::new(10.0);
static USER_AGENT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"webhook_outbox/0.1"));
static ALLOWED_CIDRS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static HTTP2: GucSetting<bool> = GucSetting::<bool>::new(true);
static CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static METRICS_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `preloading`: loaded by shared_preload_libraries. Postmaster settings can
/// only be defined then; loaded later, they keep their defaults (no workers).
pub fn init(preloading: bool) {
    GucRegistry::define_enum_guc(
        c"webhook_outbox.mode",
        c"off, shadow or on: whether events are recorded and sent.",
        c"off: enqueue/emit create nothing. shadow: rows are recorded with status shadow and never sent. on: rows are delivered.",
        &MODE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.max_attempts",
        c"Attempts before a delivery is dead, unless the endpoint sets its own; 0 = one more than the retry schedule's steps.",
        c"",
        &MAX_ATTEMPTS,
        0,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook is a #[pg_guard] function.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"webhook_outbox.retry_schedule",
            c"Delay before each retry, e.g. '5s,5m,30m,2h,5h,10h,10h'; the last one repeats.",
            c"Units: ms, s, m, h, d. Each delay is spread by +/-10%. '5s,10s,20s,40s' with max_attempts = 5 is the original worker's.",
            &RETRY_SCHEDULE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_retry_schedule),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"webhook_outbox.retry_after_max",
        c"Longest Retry-After a receiver may ask for; longer values are capped.",
        c"",
        &RETRY_AFTER_MAX_S,
        0,
        7 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.circuit_failure_threshold",
        c"Consecutive failures that open an endpoint's circuit.",
        c"",
        &CIRCUIT_FAILURE_THRESHOLD,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.circuit_open_seconds",
        c"How long an open circuit stays open before one probe is let through.",
        c"",
        &CIRCUIT_OPEN_SECONDS,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.auto_disable_after",
        c"An endpoint failing this long without a success is disabled; 0 = never.",
        c"",
        &AUTO_DISABLE_AFTER_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.failing_after",
        c"Consecutive failures after which an endpoint.failing operational event is published.",
        c"",
        &FAILING_AFTER,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.operations_endpoint",
        c"Endpoint id that receives every operational event as a webhook; 0 = none.",
        c"The events stay in webhook_outbox.operational_events and are NOTIFYed on webhook_outbox_events either way.",
        &OPERATIONS_ENDPOINT,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"webhook_outbox.allow_http",
        c"Allow plain http:// endpoints (https only when off).",
        c"",
        &ALLOW_HTTP,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.max_payload_bytes",
        c"Largest payload enqueue accepts, in bytes of JSON text.",
        c"",
        &MAX_PAYLOAD_BYTES,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    if preloading {
        GucRegistry::define_string_guc(
            c"webhook_outbox.database",
            c"Database the delivery workers connect to.",
            c"",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"webhook_outbox.workers",
            c"Number of delivery background workers (0 = none; use run_once or an external worker).",
            c"",
            &WORKERS,
            0,
            MAX_WORKERS as i32,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"webhook_outbox.batch_size",
        c"Deliveries a worker claims in one transaction.",
        c"",
        &BATCH_SIZE,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.concurrency",
        c"HTTP requests in flight per worker.",
        c"",
        &CONCURRENCY,
        1,
        1_024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.poll_interval",
        c"Fallback wake-up of an idle worker; commits wake it at once.",
        c"",
        &POLL_INTERVAL_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.http_timeout",
        c"Total time allowed for one HTTP request.",
        c"",
        &HTTP_TIMEOUT_MS,
        1,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.connect_timeout",
        c"Time allowed to open a connection.",
        c"",
        &CONNECT_TIMEOUT_MS,
        1,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"webhook_outbox.lease",
        c"How long a claimed delivery stays reserved before another worker may take it again.",
        c"A worker that dies mid-batch leaves its deliveries to be sent again after the lease. The worker uses at least http_timeout + 2s.",
        &LEASE_MS,
        1_000,
        86_400_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_float_guc(
        c"webhook_outbox.rate_limit_rps",
        c"Requests per second per endpoint, unless the endpoint sets its own (0 = unlimited).",
        c"",
        &RATE_LIMIT_RPS,
        0.0,
        webhook_outbox_core::ratelimit::MAX_RPS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"webhook_outbox.user_agent",
        c"User-Agent header of webhook requests.",
        c"",
        &USER_AGENT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"webhook_outbox.allowed_cidrs",
        c"Address ranges exempt from the SSRF guard, e.g. '10.0.0.0/8, ::1/128'.",
        c"Loopback, private, link-local and other internal addresses are refused unless listed here.",
        &ALLOWED_CIDRS,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_bool_guc(
        c"webhook_outbox.http2",
        c"Offer HTTP/2 to https receivers by ALPN (HTTP/1.1 only when off).",
        c"",
        &HTTP2,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"webhook_outbox.ca_file",
        c"PEM file of extra CA certificates trusted for https endpoints.",
        c"",
        &CA_FILE,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"webhook_outbox.metrics_listen",
        c"Address (host:port) where the first worker serves GET /metrics; empty = off.",
        c"",
        &METRICS_LISTEN,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"webhook_outbox".as_ptr()) };
}

fn string(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn mode() -> Mode {
    MODE.get()
}
pub fn retry_policy() -> webhook_outbox_core::outcome::RetryPolicy {
    webhook_outbox_core::outcome::RetryPolicy {
        schedule_ms: retry_schedule(),
        retry_after_max_ms: RETRY_AFTER_MAX_S.get() as u64 * 1_000,
    }
}

/// `retry_schedule`, parsed (its check hook refused anything else).
fn retry_schedule() -> Vec<u64> {
    use webhook_outbox_core::outcome::{parse_schedule, DEFAULT_SCHEDULE};
    parse_schedule(&string(&RETRY_SCHEDULE))
        .or_else(|_| parse_schedule(DEFAULT_SCHEDULE))
        .unwrap_or_default()
}

/// A new delivery's attempts when neither the caller nor its endpoint says:
/// `max_attempts`, or one more than the steps of `retry_schedule`.
#[pgrx::pg_extern(stable, parallel_safe)]
fn _default_max_attempts() -> i32 {
    match MAX_ATTEMPTS.get() {
        0 => retry_schedule().len() as i32 + 1,
        n => n,
    }
}

/// Refuses a `retry_schedule` that does not parse, with what to fix.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_retry_schedule(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pgrx::pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: Postgres passes the proposed value, a C string or NULL.
    let value = unsafe { newval.as_ref().filter(|v| !v.is_null()) }
        .map(|v| {
            unsafe { std::ffi::CStr::from_ptr(*v) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    match webhook_outbox_core::outcome::parse_schedule(&value) {
        Ok(_) => true,
        Err(e) => {
            let detail = CString::new(e).unwrap_or_default();
            // SAFETY: the detail is copied into the current memory context, as GUC_check_errdetail() does.
            unsafe {
                pgrx::pg_sys::GUC_check_errdetail_string = pgrx::pg_sys::pstrdup(detail.as_ptr())
            };
            false
        }
    }
}
pub fn failing_after() -> i32 {
    FAILING_AFTER.get()
}
pub fn auto_disable_after_ms() -> i64 {
    AUTO_DISABLE_AFTER_S.get() as i64 * 1_000
}
pub fn breaker_policy() -> webhook_outbox_core::circuit::BreakerPolicy {
    webhook_outbox_core::circuit::BreakerPolicy {
        failure_threshold: CIRCUIT_FAILURE_THRESHOLD.get() as u32,
        open_ms: CIRCUIT_OPEN_SECONDS.get() as i64 * 1_000,
    }
}
pub fn allow_http() -> bool {
    ALLOW_HTTP.get()
}
pub fn database() -> String {
    string(&DATABASE)
}
pub fn workers() -> usize {
    WORKERS.get() as usize
}
pub fn batch_size() -> usize {
    BATCH_SIZE.get() as usize
}
pub fn concurrency() -> usize {
    CONCURRENCY.get() as usize
}
pub fn poll_interval_ms() -> u64 {
    POLL_INTERVAL_MS.get() as u64
}
/// What a lease must cover beyond a request's timeout: its wait in the
/// queue before it starts, and settling its result.
pub const SETTLE_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The lease the worker takes: `lease`, raised if need be to outlast a
/// request's timeout plus its queue wait and settle (a lease that ends while
/// the request runs lets another worker send the same webhook at once).
pub fn lease_ms() -> i64 {
    let floor = HTTP_TIMEOUT_MS.get() as i64 + 2 * SETTLE_MARGIN.as_millis() as i64;
    (LEASE_MS.get() as i64).max(floor)
}
pub fn max_payload_bytes() -> i32 {
    MAX_PAYLOAD_BYTES.get()
}
pub fn rate_limit_rps() -> f64 {
    RATE_LIMIT_RPS.get()
}
pub fn metrics_listen() -> String {
    string(&METRICS_LISTEN)
}

/// The HTTP client's settings; the worker rebuilds its client when they change.
pub fn http_config() -> Result<webhook_outbox_core::delivery::HttpConfig, String> {
    let ca_file = string(&CA_FILE);
    Ok(webhook_outbox_core::delivery::HttpConfig {
        timeout: std::time::Duration::from_millis(HTTP_TIMEOUT_MS.get() as u64),
        connect_timeout: std::time::Duration::from_millis(CONNECT_TIMEOUT_MS.get() as u64),
        user_agent: string(&USER_AGENT),
        ca_file: (!ca_file.is_empty()).then_some(ca_file),
        allowed_cidrs: webhook_outbox_core::delivery::parse_cidrs(&string(&ALLOWED_CIDRS))
            .map_err(|e| format!("webhook_outbox.allowed_cidrs: {e}"))?,
        allow_http: ALLOW_HTTP.get(),
        http2: HTTP2.get(),
        max_connections: CONCURRENCY.get() as usize * 2,
    })
}

/// `current_setting('webhook_outbox.' || name)` for SQL, through the library:
/// calling it loads the library, which defines the settings first. Without
/// `shared_preload_libraries` a fresh session would otherwise find no such
/// setting, or a placeholder any role may `SET` before the library loads;
/// loading checks such placeholders against the settings' privileges.
#[pgrx::pg_extern(stable, strict, parallel_safe)]
fn _setting(name: &str) -> Result<String, pgrx::pg_sys::panic::ErrorReport> {
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(crate::pg::invalid(
            format!("no setting webhook_outbox.{name}"),
            "",
        ));
    }
    let full = CString::new(format!("webhook_outbox.{name}")).unwrap_or_default();
    // SAFETY: a NUL-terminated name; missing_ok = false raises an ERROR for an unknown one.
    let value =
        unsafe { pgrx::pg_sys::GetConfigOptionByName(full.as_ptr(), std::ptr::null_mut(), false) };
    Ok(unsafe { std::ffi::CStr::from_ptr(value) }
        .to_string_lossy()
        .into_owned())
}
