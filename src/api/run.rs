//! `run_once`: one delivery pass in the calling session, through the worker's engine.

use crate::pg::{invalid, spi_error};
use crate::pipeline::Engine;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::time::Duration;
use webhook_outbox_core::dispatch::Waker;

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
fn run_once(max_rows: default!(i32, 1000)) -> Result<i64, ErrorReport> {
    if max_rows < 1 {
        return Err(invalid(
            format!("max_rows must be at least 1, got {max_rows}"),
            "",
        ));
    }
    let waker = Waker::new().map_err(|e| invalid(format!("eventfd: {e}"), ""))?;
    let mut engine = Engine::new(waker.clone()).map_err(|e| {
        invalid(
            e,
            "Check webhook_outbox.allowed_cidrs and webhook_outbox.ca_file.",
        )
    })?;
    Spi::connect_mut(|client| {
        // Everything runs inside this transaction, requests included: they
        // leave before it commits, so a caller that rolls back has still sent
        // them (at-least-once; receivers dedupe on webhook-id).
        // No worker may run: emit()'s events first, so that the claim sees them.
        crate::pipeline::route_intake(client, max_rows as usize).map_err(spi_error)?;
        let batch = engine.claim(client, max_rows as usize).map_err(spi_error)?;
        engine.submit(batch.jobs);
        let mut attempted = 0i64;
        loop {
            let idle = engine.idle();
            let settled = engine.settle(client).map_err(spi_error)?;
            engine.settled();
            attempted += (settled.sent + settled.failed) as i64;
            if idle && engine.outstanding() == 0 {
                return Ok(attempted);
            }
            pgrx::check_for_interrupts!();
            wait_readable(waker.fd(), Duration::from_millis(100));
            waker.clear();
        }
    })
}

fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
}
