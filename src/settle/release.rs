//! Giving claimed deliveries back untried.

use crate::pg;
use pgrx::spi::{self, SpiClient};
use webhook_outbox_core::dispatch::Ticket;

/// Put claimed deliveries back without counting an attempt (rate limit,
/// shutdown, an endpoint whose circuit opened meanwhile, a job too late to
/// start): each becomes due at its `at_ms` (Unix milliseconds; 0 = now).
pub fn release(client: &mut SpiClient<'_>, deliveries: &[(Ticket, i64)]) -> spi::Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    pg::execute(
        client,
        include_str!("../../sql/queries/release.sql"),
        &[
            deliveries
                .iter()
                .map(|d| d.0.delivery_id)
                .collect::<Vec<_>>()
                .into(),
            deliveries
                .iter()
                .map(|d| pgrx::Uuid::from_bytes(d.0.lease))
                .collect::<Vec<_>>()
                .into(),
            deliveries.iter().map(|d| d.1).collect::<Vec<_>>().into(),
        ],
    )?;
    Ok(())
}
