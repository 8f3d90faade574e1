//! The worker's transactions: each step in its own, an ERROR caught and
//! logged, and nothing called unless the extension is installed.

use pgrx::prelude::*;

/// Run `f` in its own transaction. Unlike `BackgroundWorker::transaction`, an
/// ERROR inside is caught and the transaction aborted: one bad batch is
/// logged, the worker goes on.
fn transaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    // Whatever `f` touched is discarded or logged on error, never reused half-done.
    let f = std::panic::AssertUnwindSafe(f);
    let outcome = PgTryBuilder::new(move || Ok(f()))
        .catch_others(|e| {
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_owned(),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                    ereport.message().to_owned()
                }
            })
        })
        .execute();
    unsafe {
        match outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
        // Without this autovacuum never learns about the worker's dead rows.
        pg_sys::pgstat_report_stat(false);
    }
    outcome
}

/// `transaction` around SPI work, with both kinds of failure as one message.
fn spi_transaction<R>(
    f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>) -> pgrx::spi::Result<R>,
) -> Result<R, String> {
    transaction(|| Spi::connect_mut(f))?.map_err(|e| e.to_string())
}

/// The installed extension's oid, if the schema the worker calls into is
/// its own (see the file for the conditions).
const INSTALLED: &str = include_str!("../../sql/queries/installed.sql");

thread_local! {
    /// The extension's oid the last transaction found: the next one locks it
    /// before it checks, so that one check is enough.
    static LAST_INSTALLED: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
}

/// Whether the extension is installed (see `INSTALLED`), held so until the
/// transaction ends: the lock makes a concurrent DROP EXTENSION wait, so no
/// schema can be planted between the check and the statements after it.
/// The check runs after the lock is held: on the oid found last time (the
/// same extension, every transaction but the first), or else on the oid the
/// check finds, checked again once locked (dropped while we waited?).
fn installed(client: &mut pgrx::spi::SpiClient<'_>) -> pgrx::spi::Result<bool> {
    let extension = |c: &mut pgrx::spi::SpiClient<'_>| -> pgrx::spi::Result<Option<pg_sys::Oid>> {
        crate::pg::execute(c, INSTALLED, &[])?
            .first()
            .get_one::<pg_sys::Oid>()
    };
    // SAFETY: a lock on a catalog object, released at the end of the transaction.
    let lock = |oid: pg_sys::Oid| unsafe {
        pg_sys::LockDatabaseObject(
            pg_sys::ExtensionRelationId,
            oid,
            0,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        )
    };
    let mut locked = LAST_INSTALLED.get();
    if let Some(oid) = locked {
        lock(oid);
    }
    loop {
        let found = extension(client)?;
        LAST_INSTALLED.set(found);
        match found {
            None => return Ok(false),
            Some(oid) if Some(oid) == locked => return Ok(true),
            Some(oid) => {
                // A lock on an oid that is not (or no longer) the extension's
                // is harmless, and ends with the transaction.
                lock(oid);
                locked = Some(oid);
            }
        }
    }
}

/// `spi_transaction`, run only if the extension is installed (`None` if not):
/// checked in every transaction, since the extension may be dropped, and a
/// schema of its name planted, at any time.
pub(super) fn installed_transaction<R>(
    f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>) -> pgrx::spi::Result<R>,
) -> Result<Option<R>, String> {
    spi_transaction(|c| {
        if installed(c)? {
            f(c).map(Some)
        } else {
            Ok(None)
        }
    })
}
