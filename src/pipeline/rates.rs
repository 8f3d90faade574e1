//! Rate-limit state for the claim: the shared table, or without shared
//! memory one of this session's own.

use crate::shmem;
use std::cell::RefCell;
use webhook_outbox_core::ratelimit::RateTable;

thread_local! {
    /// Without shared memory (library not preloaded) a session limits rates alone.
    static LOCAL_RATES: RefCell<Box<RateTable>> = RefCell::new(Box::default());
}

pub fn with_rates<R>(f: impl FnOnce(&mut RateTable) -> R) -> R {
    if shmem::available() {
        f(&mut shmem::RATES.exclusive().0)
    } else {
        LOCAL_RATES.with(|t| f(&mut t.borrow_mut()))
    }
}
