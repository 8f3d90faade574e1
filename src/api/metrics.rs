//! Prometheus metrics. `metrics()` itself is SQL (sql/metrics.sql), so psql,
//! an exporter and the worker's `/metrics` listener read the same text.

/// The text of `webhook_outbox.metrics()`, for the worker's listener. An
/// ERROR inside is raised, not returned, so call it where errors are caught
/// (the worker's transactions).
pub fn render_metrics(client: &mut pgrx::spi::SpiClient<'_>) -> pgrx::spi::Result<Option<String>> {
    client
        .select("SELECT webhook_outbox.metrics()", None, &[])?
        .first()
        .get_one::<String>()
}
