//! Putting events into the outbox: `emit` (to every subscribed endpoint) and
//! `enqueue` (to one), and the path they share with `backfill`: every event
//! passes [`check_event`] and is written by one statement in the caller's
//! transaction, so that an event exists iff that transaction commits:
//! [`insert_event`] into deliveries for `enqueue` and `backfill`, which return
//! what they created; into the intake for `emit`, the call applications make
//! from their hottest triggers (sql/schema.sql says why).
//!
//! In Rust, not PL/pgSQL: applications call `emit` from triggers on their
//! busiest tables, and each PL/pgSQL layer (a `SET search_path` on entry and
//! exit, a nested call per check, arrays built for one event) cost more than
//! the insert itself (BENCHMARKS.md). Both functions are SECURITY DEFINER,
//! so that callers need no rights on the tables, without a `SET search_path`:
//! nothing here resolves a name through it (the statement is schema-qualified
//! throughout, like the worker's: sql/queries/README.md).

use crate::guc::{self, Mode};
use crate::pg::{error, invalid, not_null};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;
use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::{c_char, CStr};
use std::thread::LocalKey;
use webhook_outbox_core::delivery::check_event_key;

/// An insert of sql/queries, prepared once per session (`pg::kept_plan`),
/// with its parameters' types.
struct Kept {
    file: &'static str,
    sql: &'static CStr,
    types: &'static [pg_sys::Oid],
    plan: &'static LocalKey<Cell<pg_sys::SPIPlanPtr>>,
}

macro_rules! kept {
    ($file:literal, $plan:ident, [$($ty:ident),*]) => {{
        thread_local! {
            static $plan: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
        }
        Kept {
            file: $file,
            sql: match CStr::from_bytes_with_nul(
                concat!(include_str!(concat!("../../sql/queries/", $file)), "\0").as_bytes(),
            ) {
                Ok(sql) => sql,
                Err(_) => panic!(concat!($file, " holds a NUL byte")),
            },
            types: &[$(pg_sys::$ty),*],
            plan: &$plan,
        }
    }};
}

static INSERT_EVENT: Kept = kept!(
    "insert_event.sql",
    PLAN,
    [INT8OID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, INT4OID]
);
static INSERT_INTAKE: Kept = kept!(
    "insert_intake.sql",
    PLAN,
    [
        INT8ARRAYOID,
        TEXTOID,
        TEXTOID,
        JSONBOID,
        TEXTOID,
        TEXTOID,
        TEXTOID
    ]
);

/// A `jsonb` argument kept as its datum. pgrx's `JsonB` would print it and
/// parse the text into a `serde_json::Value`; the insert only passes it on.
#[derive(Clone, Copy)]
pub(crate) struct Jsonb(pub(crate) pg_sys::Datum);

impl FromDatum for Jsonb {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Jsonb> {
        (!is_null).then_some(Jsonb(datum))
    }
}

impl IntoDatum for Jsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for Jsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Jsonb {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Jsonb> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

unsafe impl SqlTranslatable for Jsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Jsonb);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

impl Jsonb {
    /// Bytes of the payload as jsonb prints it: the request body the worker sends.
    pub(crate) fn text_len(self) -> usize {
        // SAFETY: a jsonb datum (the argument's type, or a jsonb column); the
        // printed copy is freed at once, so that a large payload is not held twice.
        unsafe {
            let Some(printed) =
                pgrx::direct_function_call_as_datum(pg_sys::jsonb_out, &[Some(self.0)])
            else {
                return 0;
            };
            let text = printed.cast_mut_ptr::<c_char>();
            let len = CStr::from_ptr(text).to_bytes().len();
            pg_sys::pfree(text.cast());
            len
        }
    }
}

/// The payload limit, in one place: why a payload of `size` bytes (its jsonb
/// text, see [`Jsonb::text_len`]) is refused, or `None` when it fits.
pub(crate) fn payload_refusal(size: usize) -> Option<String> {
    let max = usize::try_from(guc::max_payload_bytes()).unwrap_or(0);
    (size > max).then(|| {
        format!("payload of {size} bytes exceeds webhook_outbox.max_payload_bytes ({max})")
    })
}

/// The checks an event passes before it is routed, whatever the mode or the
/// rollout flag say. Backfill checks its lines with the same key rule
/// (`webhook_outbox_core::backfill`) and the same [`payload_refusal`], and
/// reports a bad line instead of raising.
fn check_event<'a>(
    event_type: Option<&'a str>,
    payload: Option<Jsonb>,
    event_id: Option<&str>,
    subject_id: Option<&str>,
) -> Result<(&'a str, Jsonb), ErrorReport> {
    // Blank as btrim() sees it: spaces only (a tab is refused by the key rule).
    let event_type = event_type
        .filter(|t| !t.trim_matches(' ').is_empty())
        .ok_or_else(|| {
            invalid(
                "event_type must not be empty",
                "Name the event, e.g. 'order.paid'.",
            )
        })?;
    // event_id becomes the webhook-id header: checked here, never later by the worker.
    let keys = [
        ("event_type", Some(event_type)),
        ("event_id", event_id),
        ("subject_id", subject_id),
    ];
    for (field, value) in keys {
        if let Some(value) = value {
            check_event_key(field, value).map_err(|e| invalid(e, ""))?;
        }
    }
    let payload = payload
        .ok_or_else(|| not_null("payload", "Send '{}'::jsonb for an event without data."))?;
    if let Some(reason) = payload_refusal(payload.text_len()) {
        return Err(error(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            reason,
            "Send a reference to the document instead, or raise webhook_outbox.max_payload_bytes.",
        ));
    }
    Ok((event_type, payload))
}

/// The event id given, or, for an event given without one, a random UUID as text.
fn event_id_or_new(given: Option<&str>) -> Cow<'_, str> {
    match given {
        Some(id) => Cow::Borrowed(id),
        None => {
            // SAFETY: gen_random_uuid takes no arguments and returns a uuid datum.
            let uuid = unsafe {
                pgrx::direct_function_call::<pgrx::datum::Uuid>(pg_sys::gen_random_uuid, &[])
            };
            Cow::Owned(uuid.map(|u| u.to_string()).unwrap_or_default())
        }
    }
}
#[pg_extern(volatile, parallel_unsafe, security_definer)]
fn emit(
    event_type: Option<&str>,
    payload: Option<Jsonb>,
    event_id: default!(Option<&str>, "NULL"),
    subject_id: default!(Option<&str>, "NULL"),
    flag: default!(Option<&str>, "NULL"),
) -> Result<i32, ErrorReport> {
    let (event_type, payload) = check_event(event_type, payload, event_id, subject_id)?;
    let Some(status) = new_status(guc::mode()) else {
        return Ok(0);
    };
    // A NULL subject has no bucket: it passes only a flag at 100% (core/src/bucket.rs).
    if flag.is_some() && !crate::rollout::decision(flag, subject_id).emit {
        return Ok(0);
    }
    let endpoints = super::routes::endpoints_for(event_type);
    if endpoints.is_empty() {
        return Ok(0); // nobody subscribes: nothing is written
    }
    let routed = i32::try_from(endpoints.len()).unwrap_or(i32::MAX);
    let event_id = event_id_or_new(event_id);
    let text = |s: &str| s.into_datum();
    let args = [
        endpoints.as_ref().into_datum(),
        text(&event_id),
        text(event_type),
        Some(payload.0),
        subject_id.and_then(text),
        text(status),
        flag.and_then(text),
    ];
    Spi::connect_mut(|_spi| {
        // SAFETY: SPI is connected; one datum of the declared type per parameter.
        unsafe { INSERT_INTAKE.run(&args) }
    })?;
    // No trigger on the intake: this is its only writer, and a trigger costs
    // every emit. The worker moves shadow events too.
    crate::shmem::wake_workers_at_commit(true);
    Ok(routed)
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
fn enqueue(
    endpoint_id: Option<i64>,
    event_type: Option<&str>,
    payload: Option<Jsonb>,
    event_id: default!(Option<&str>, "NULL"),
    subject_id: default!(Option<&str>, "NULL"),
) -> Result<Option<i64>, ErrorReport> {
    let endpoint_id = endpoint_id.ok_or_else(|| not_null("endpoint_id", ""))?;
    let (event_type, payload) = check_event(event_type, payload, event_id, subject_id)?;
    let Some(status) = new_status(guc::mode()) else {
        return Ok(None);
    };
    let event_id = event_id_or_new(event_id);
    let event = NewEvent {
        endpoint: Some(endpoint_id),
        event_id: &event_id,
        event_type,
        payload,
        subject_id,
        flag: None,
        max_attempts: None,
    };
    let existing = Spi::connect_mut(|spi| {
        if let (_, Some(id)) = insert_event(spi, &event, status)? {
            return Ok(Some(id));
        }
        // Already queued with this event_id (perhaps by a transaction that
        // committed while the insert waited for it: read-write, so that the
        // statement takes a new snapshot); none: no such endpoint.
        let rows = spi
            .update(
                "SELECT d.id FROM webhook_outbox.deliveries d
                 WHERE d.endpoint_id OPERATOR(pg_catalog.=) $1 AND d.event_id OPERATOR(pg_catalog.=) $2",
                None,
                &[endpoint_id.into(), event_id.as_ref().into()],
            )
            .map_err(crate::pg::spi_error)?;
        match rows.into_iter().next() {
            Some(row) => row.get::<i64>(1).map_err(crate::pg::spi_error),
            None => Ok(None),
        }
    })?;
    existing.map(Some).ok_or_else(|| {
        error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("endpoint {endpoint_id} does not exist"),
            "Create it with webhook_outbox.create_endpoint(url).",
        )
    })
}

/// One event for [`insert_event`], checked.
pub(crate) struct NewEvent<'a> {
    /// The endpoint named (enqueue, backfill to one endpoint); `None` fans
    /// out to every enabled endpoint subscribed to the type.
    pub endpoint: Option<i64>,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub payload: Jsonb,
    pub subject_id: Option<&'a str>,
    /// The rollout flag `emit` checked, recorded in `flag_key`.
    pub flag: Option<&'a str>,
    pub max_attempts: Option<i32>,
}

/// The status new deliveries get: `shadow` rows are recorded and never sent.
/// `None` in mode `off`, where nothing is written.
pub(crate) fn new_status(mode: Mode) -> Option<&'static str> {
    match mode {
        Mode::Off => None,
        Mode::Shadow => Some("shadow"),
        Mode::On => Some("pending"),
    }
}

/// Writes one event where `_routes()` sends it, into deliveries, with
/// `status` (see [`new_status`]); returns how many deliveries it created and
/// the id of the first. A delivery already in the outbox for an endpoint
/// (same event id) is left as it is. Runs in the caller's SPI connection
/// (`_spi` proves there is one): backfill writes thousands of events in one.
pub(crate) fn insert_event(
    _spi: &mut SpiClient<'_>,
    e: &NewEvent<'_>,
    status: &str,
) -> Result<(u64, Option<i64>), ErrorReport> {
    let text = |s: &str| s.into_datum();
    let args = [
        e.endpoint.into_datum(),
        text(e.event_id),
        text(e.event_type),
        Some(e.payload.0),
        e.subject_id.and_then(text),
        text(status),
        e.flag.and_then(text),
        e.max_attempts.into_datum(),
    ];
    // SAFETY: SPI is connected (`_spi`); one datum of the declared type per parameter.
    let (created, first) = unsafe { INSERT_EVENT.run(&args)? };
    Ok((created, first.map(|id| id.value() as i64)))
}

impl Kept {
    /// Runs the insert: how many rows it wrote, and the first row's value
    /// when it returns one, pass-by-value, column.
    ///
    /// # Safety
    /// SPI is connected, and `args` has one datum of the type in `types` per parameter.
    unsafe fn run(
        &self,
        args: &[Option<pg_sys::Datum>],
    ) -> Result<(u64, Option<pg_sys::Datum>), ErrorReport> {
        let values: Vec<pg_sys::Datum> = args
            .iter()
            .map(|a| a.unwrap_or(pg_sys::Datum::from(0)))
            .collect();
        let nulls: Vec<c_char> = args
            .iter()
            .map(|a| if a.is_some() { b' ' } else { b'n' } as c_char)
            .collect();
        unsafe {
            let rc = pg_sys::SPI_execute_plan(
                crate::pg::kept_plan(self.plan, self.sql, self.types, self.file)?,
                values.as_ptr().cast_mut(),
                nulls.as_ptr(),
                false,
                0,
            );
            let inserted = [pg_sys::SPI_OK_INSERT, pg_sys::SPI_OK_INSERT_RETURNING];
            if !inserted.iter().any(|&ok| rc == ok as i32) {
                return Err(internal(format!(
                    "{}: SPI_execute_plan returned {rc}",
                    self.file
                )));
            }
            let processed = pg_sys::SPI_processed;
            let table = pg_sys::SPI_tuptable;
            if table.is_null() {
                return Ok((processed, None));
            }
            let mut first = None;
            if processed > 0 {
                let mut is_null = false;
                let value =
                    pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut is_null);
                first = (!is_null).then_some(value);
            }
            // Freed now, not when the connection ends: backfill makes thousands.
            pg_sys::SPI_freetuptable(table);
            Ok((processed, first))
        }
    }
}

fn internal(message: String) -> ErrorReport {
    error(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message, "")
}
