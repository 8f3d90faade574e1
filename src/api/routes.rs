//! Where emit() sends an event: the ids of the enabled endpoints subscribed to
//! its type (`_routes()`, sql/queries/routes.sql), cached per session by event
//! type and kept fresh by `crate::config_cache`. Reading the endpoints in
//! emit()'s own insert cost applications a sixth of their write rate
//! (BENCHMARKS.md); the endpoints change rarely, emit() runs on every write.

use crate::config_cache::{cached, load_latest, SessionCache};
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

/// The endpoint ids of `event_type` (see `config_cache::load_latest`).
fn load(event_type: &str) -> Vec<i64> {
    load_latest(&PLAN, LOAD_ROUTES, "the endpoints of", event_type, |row| {
        row.and_then(|row| {
            row.get::<Vec<i64>>(1).unwrap_or_else(|e| {
                pgrx::error!("webhook_outbox: reading the endpoints of {event_type:?}: {e}")
            })
        })
        .unwrap_or_default()
    })
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
