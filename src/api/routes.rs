//! Where emit() sends an event: the ids of the enabled endpoints subscribed to
//! its type (`_routes()`, sql/queries/routes.sql), cached per session by event
//! type and kept fresh by `crate::config_cache`. Reading the endpoints in
//! emit()'s own insert cost applications a sixth of their write rate
//! (BENCHMARKS.md); the endpoints change rarely, emit() runs on every write.

use crate::config_cache::{cached, SessionCache};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::rc::Rc;

const LOAD_ROUTES: &CStr = match CStr::from_bytes_with_nul(
    concat!(include_str!("../../sql/queries/routes.sql"), "\0").as_bytes(),
) {
    Ok(sql) => sql,
    Err(_) => panic!("routes.sql holds a NUL byte"),
};

/// Lists longer than this are read again at each emit() rather than kept: a
/// session's cache stays within 1024 types of 1,000 ids (8 MB), and reading
/// them costs little beside writing as many ids.
const MAX_CACHED_IDS: usize = 1_000;

thread_local! {
    /// Endpoint ids by event type (`None`: too many to keep).
    static CACHE: RefCell<SessionCache<Option<Rc<[i64]>>>> = RefCell::new(SessionCache::default());
    /// `LOAD_ROUTES`, prepared once per backend.
    static PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

/// The endpoints an event of `event_type` goes to now (none: nobody subscribes).
pub(crate) fn endpoints_for(event_type: &str) -> Rc<[i64]> {
    let mut long = None;
    let kept = cached(
        &CACHE,
        event_type,
        || {
            let ids = load(event_type);
            if ids.len() <= MAX_CACHED_IDS {
                return Some(Rc::from(ids));
            }
            long = Some(ids);
            None
        },
        Option::clone,
    );
    kept.or_else(|| long.map(Rc::from))
        .unwrap_or_else(|| Rc::from(load(event_type)))
}

/// The routes as committed now, plus this transaction's own changes, whatever
/// the calling statement's snapshot: the entry outlives the statement (as a
/// feature flag's, `rollout::cache`).
fn load(event_type: &str) -> Vec<i64> {
    Spi::connect(|_| {
        // SAFETY: SPI is connected; the plan is kept for the backend's life;
        // the one value is copied into a Vec before SPI_finish frees it.
        unsafe {
            let mut args = [event_type.into_datum().expect("a &str is never NULL")];
            let status = pg_sys::SPI_execute_snapshot(
                plan(),
                args.as_mut_ptr(),
                std::ptr::null(),
                pg_sys::GetLatestSnapshot(),
                std::ptr::null_mut(),
                true,
                false,
                1,
            );
            if status != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
                pgrx::error!(
                    "webhook_outbox: reading the endpoints of {event_type:?} failed: SPI status {status}"
                );
            }
            let table = &*pg_sys::SPI_tuptable;
            let mut is_null = false;
            let datum = pg_sys::SPI_getbinval(*table.vals, table.tupdesc, 1, &mut is_null);
            Vec::<i64>::from_datum(datum, is_null).unwrap_or_default()
        }
    })
}

fn plan() -> pg_sys::SPIPlanPtr {
    if PLAN.get().is_null() {
        let mut arg_types = [pg_sys::TEXTOID];
        // SAFETY: called inside an SPI connection, with one argument type for
        // the one parameter.
        let plan = unsafe { pg_sys::SPI_prepare(LOAD_ROUTES.as_ptr(), 1, arg_types.as_mut_ptr()) };
        if plan.is_null() {
            pgrx::error!(
                "webhook_outbox: preparing the routes query failed: SPI status {}",
                unsafe { pg_sys::SPI_result }
            );
        }
        // SAFETY: a valid plan; keeping moves it out of SPI's memory context.
        if unsafe { pg_sys::SPI_keepplan(plan) } != 0 {
            pgrx::error!("webhook_outbox: keeping the routes query failed");
        }
        PLAN.set(plan);
    }
    PLAN.get()
}

/// The trigger on `endpoints` (sql/endpoints.sql): every session reads the
/// routes again once the change commits, this one at once.
#[pg_trigger]
fn _endpoints_changed<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    crate::config_cache::changed();
    Ok(None)
}
