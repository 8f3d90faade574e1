//! `backfill`: historical events from NDJSON into the outbox.
//!
//! Lines are checked by `webhook_outbox_core::backfill` (serde), so a bad
//! line is reported and skipped instead of failing the run. The accepted
//! events then go to Postgres a chunk at a time (sql/queries/backfill_chunk.sql,
//! which parses their payloads and counts their routes), and each is written
//! by the insert every event takes (`events::insert_event`: routing, status,
//! max_attempts, idempotency) once it passed the payload limit
//! (`events::payload_refusal`); events refused or no endpoint takes are
//! reported like bad lines. Run reports and failed lines
//! land in `backfill_runs` / `backfill_errors` (sql/backfill.sql).

use super::events::{insert_event, new_status, payload_refusal, Jsonb, NewEvent};
use crate::guc::{self, Mode};
use crate::pg::{error, invalid, not_null, spi_error};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;
use std::collections::HashSet;
use webhook_outbox_core::backfill::{parse_line, Event};

/// Events per statement: enough to amortise a statement's cost, few enough to
/// keep its arrays small; and bytes, so that large events cannot make an
/// array larger than Postgres allows (1 GB).
const CHUNK_EVENTS: usize = 5_000;
const CHUNK_BYTES: usize = 64 << 20;
/// Failed lines reported by NOTICE; backfill_errors keeps all of them.
const NOTICE_LIMIT: i64 = 100;
/// How much of a failed line backfill_errors keeps.
const KEPT_LINE_BYTES: usize = 1_024;

const CHUNK: &str = include_str!("../../sql/queries/backfill_chunk.sql");

struct Failure<'a> {
    line_no: i32,
    reason: String,
    line: &'a str,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    processed: i64,
    created: i64,
    enqueued: i64,
    duplicates: i64,
    failed: i64,
}

/// One call's state: its arguments, counts, and the ids seen in the input.
struct Run {
    id: i64,
    endpoint_id: Option<i64>,
    max_attempts: Option<i32>,
    dry_run: bool,
    /// The status of the deliveries written; `None` in a dry run.
    status: Option<&'static str>,
    counts: Counts,
    /// Ids of events queued, found in the outbox, or in the chunk being built.
    seen: HashSet<String>,
    /// Ids in the chunk being built, and its payload bytes.
    in_chunk: HashSet<String>,
    chunk_bytes: usize,
}

impl Run {
    /// Sort one line into the chunk, the failures, or the duplicates.
    fn accept<'a>(
        &mut self,
        parsed: Result<Event<'a>, Failure<'a>>,
        chunk: &mut Vec<Event<'a>>,
        held: &mut Vec<Event<'a>>,
        failures: &mut Vec<Failure<'a>>,
    ) {
        self.counts.processed += 1;
        match parsed {
            Err(f) => failures.push(f),
            Ok(e) => self.place(e, chunk, held),
        }
    }

    /// An event whose id came earlier in the input is a duplicate if that
    /// earlier line was queued (or found in the outbox). While the earlier
    /// line's chunk is not written, it waits (`held`): should that line be
    /// refused, this one is tried in its place.
    fn place<'a>(&mut self, e: Event<'a>, chunk: &mut Vec<Event<'a>>, held: &mut Vec<Event<'a>>) {
        if self.in_chunk.contains(&e.event_id) {
            held.push(e);
        } else if self.seen.contains(&e.event_id) {
            self.counts.duplicates += 1;
        } else {
            self.seen.insert(e.event_id.clone());
            self.in_chunk.insert(e.event_id.clone());
            self.chunk_bytes += e.payload.len();
            chunk.push(e);
        }
    }

    fn chunk_full(&self, chunk: &[Event<'_>]) -> bool {
        chunk.len() >= CHUNK_EVENTS || self.chunk_bytes >= CHUNK_BYTES
    }

    /// Write every accepted line, those held behind an earlier one included.
    fn flush_all<'a>(
        &mut self,
        client: &mut SpiClient<'_>,
        chunk: &mut Vec<Event<'a>>,
        held: &mut Vec<Event<'a>>,
        failures: &mut Vec<Failure<'a>>,
    ) -> Result<(), ErrorReport> {
        // Each round places at least one held line (ids repeat at most that often).
        loop {
            self.flush(client, chunk, held, failures)?;
            if chunk.is_empty() && held.is_empty() {
                return Ok(());
            }
        }
    }

    /// Write (or count) a chunk of accepted events, then report the failed lines.
    /// Held lines whose earlier twin was refused take its place in the next chunk.
    fn flush<'a>(
        &mut self,
        client: &mut SpiClient<'_>,
        chunk: &mut Vec<Event<'a>>,
        held: &mut Vec<Event<'a>>,
        failures: &mut Vec<Failure<'a>>,
    ) -> Result<(), ErrorReport> {
        if !chunk.is_empty() {
            // A connection of its own: what the chunk's statements allocate
            // (the payloads they return, each insert's arguments) is freed
            // with it, not kept until the run ends.
            Spi::connect_mut(|client| self.write_chunk(client, chunk, failures))?;
            chunk.clear();
        }
        self.in_chunk.clear();
        self.chunk_bytes = 0;
        for e in std::mem::take(held) {
            self.place(e, chunk, held);
        }
        failures.sort_by_key(|f| f.line_no);
        self.report(client, failures)
    }

    /// Check (and, unless a dry run, write) the events of a chunk, noting
    /// those refused in `failures`.
    fn write_chunk<'a>(
        &mut self,
        client: &mut SpiClient<'_>,
        chunk: &[Event<'a>],
        failures: &mut Vec<Failure<'a>>,
    ) -> Result<(), ErrorReport> {
        let column =
            |f: for<'e> fn(&'e Event<'a>) -> &'e str| chunk.iter().map(f).collect::<Vec<_>>();
        let rows = client
            .update(
                CHUNK,
                None,
                &[
                    self.endpoint_id.into(),
                    column(|e| &e.event_id).into(),
                    column(|e| &e.event_type).into(),
                    column(|e| e.payload).into(),
                    self.max_attempts.into(),
                    self.dry_run.into(),
                ],
            )
            .map_err(spi_error)?;
        for row in rows {
            let event_no: i32 = row.get(1).map_err(spi_error)?.unwrap_or_default();
            let payload: Option<Jsonb> = row.get(2).map_err(spi_error)?;
            let routes: i64 = row.get(3).map_err(spi_error)?.unwrap_or_default();
            let would_create: i64 = row.get(4).map_err(spi_error)?.unwrap_or_default();
            let (Some(e), Some(payload)) = (
                usize::try_from(event_no - 1)
                    .ok()
                    .and_then(|i| chunk.get(i)),
                payload,
            ) else {
                continue;
            };
            let refusal = payload_refusal(payload.text_len());
            let reason = match (refusal, routes) {
                (Some(reason), _) => reason,
                (None, 0) => format!(
                    "no enabled endpoint subscribes to event_type '{}'",
                    e.event_type
                ),
                (None, _) => {
                    let created = match self.status {
                        // A dry run: what the insert would create.
                        None => would_create,
                        Some(status) => {
                            let event = NewEvent {
                                endpoint: self.endpoint_id,
                                event_id: &e.event_id,
                                event_type: &e.event_type,
                                payload,
                                subject_id: Some(&e.subject_id),
                                flag: None,
                                max_attempts: self.max_attempts,
                            };
                            insert_event(client, &event, status)?.0 as i64
                        }
                    };
                    if created > 0 {
                        self.counts.created += 1;
                        self.counts.enqueued += created;
                    } else {
                        self.counts.duplicates += 1;
                    }
                    continue;
                }
            };
            // Not queued: a later line with this id is tried on its own.
            self.seen.remove(&e.event_id);
            failures.push(Failure {
                line_no: e.line_no,
                reason,
                line: e.payload,
            });
        }
        Ok(())
    }

    /// NOTICE the first failed lines, record all of them.
    fn report(
        &mut self,
        client: &mut SpiClient<'_>,
        failures: &mut Vec<Failure<'_>>,
    ) -> Result<(), ErrorReport> {
        if failures.is_empty() {
            return Ok(());
        }
        for f in failures.iter() {
            self.counts.failed += 1;
            if self.counts.failed <= NOTICE_LIMIT {
                notice!("backfill line {}: {}", f.line_no, f.reason);
            } else if self.counts.failed == NOTICE_LIMIT + 1 {
                notice!(
                    "backfill: further failed lines are only recorded: SELECT * FROM webhook_outbox.backfill_errors WHERE run_id = {}",
                    self.id
                );
            }
        }
        client
            .update(
                "INSERT INTO webhook_outbox.backfill_errors (run_id, line_no, reason, line)
                 SELECT $1, * FROM unnest($2::integer[], $3::text[], $4::text[])",
                None,
                &[
                    self.id.into(),
                    failures
                        .iter()
                        .map(|f| f.line_no)
                        .collect::<Vec<_>>()
                        .into(),
                    failures
                        .iter()
                        .map(|f| f.reason.as_str())
                        .collect::<Vec<_>>()
                        .into(),
                    failures
                        .iter()
                        .map(|f| &f.line[..f.line.floor_char_boundary(KEPT_LINE_BYTES)])
                        .collect::<Vec<_>>()
                        .into(),
                ],
            )
            .map_err(spi_error)?;
        failures.clear();
        Ok(())
    }
}

// pgrx reads the result's column names from the signature itself.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhook_outbox, pg_temp)]
fn backfill(
    ndjson: Option<&str>,
    endpoint_id: default!(Option<i64>, "NULL"),
    dry_run: default!(Option<bool>, false),
    max_attempts: default!(Option<i32>, "NULL"),
    progress_every: default!(Option<i32>, 0),
) -> Result<
    TableIterator<
        'static,
        (
            name!(processed, i64),
            name!(created, i64),
            name!(enqueued, i64),
            name!(duplicates, i64),
            name!(failed, i64),
        ),
    >,
    ErrorReport,
> {
    let ndjson = ndjson.ok_or_else(|| {
        not_null(
            "ndjson",
            "Pass the file's content, e.g. in psql: \\set content `cat events.ndjson`, then backfill(:'content').",
        )
    })?;
    let dry_run = dry_run.ok_or_else(|| not_null("dry_run", ""))?;
    let progress_every = match progress_every {
        Some(n) if n >= 0 => n as i64,
        other => {
            let got = other.map_or_else(|| "NULL".to_owned(), |n| n.to_string());
            return Err(invalid(
                format!("progress_every must be 0 (no progress) or more, got {got}"),
                "",
            ));
        }
    };
    if let Some(n) = max_attempts.filter(|n| !(1..=100).contains(n)) {
        return Err(invalid(
            format!("max_attempts must be between 1 and 100, got {n}"),
            "Use NULL for the endpoint's setting.",
        ));
    }
    let mode = guc::mode();
    if mode == Mode::Off && !dry_run {
        return Err(error(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "webhook_outbox.mode is off: backfill would record nothing",
            "Backfill in shadow or on mode (SET webhook_outbox.mode = 'shadow' for this session records without sending), or use dry_run => true.",
        ));
    }
    let counts = Spi::connect_mut(|client| {
        if let Some(id) = endpoint_id {
            let exists = client
                .select(
                    "SELECT EXISTS (SELECT FROM webhook_outbox.endpoints WHERE id = $1 AND deleted_at IS NULL)",
                    None,
                    &[id.into()],
                )
                .and_then(|t| t.first().get_one::<bool>())
                .map_err(spi_error)?;
            if exists != Some(true) {
                return Err(error(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("endpoint {id} does not exist"),
                    "Pass NULL to fan out to the subscribed endpoints, or create it with webhook_outbox.create_endpoint(url).",
                ));
            }
        }
        let id = client
            .update(
                "INSERT INTO webhook_outbox.backfill_runs (endpoint_id, dry_run, mode) VALUES ($1, $2, $3)
                 RETURNING id",
                None,
                &[endpoint_id.into(), dry_run.into(), mode_name(mode).into()],
            )
            .and_then(|t| t.first().get_one::<i64>())
            .map_err(spi_error)?;
        let mut run = Run {
            id: id.unwrap_or_default(),
            endpoint_id,
            max_attempts,
            dry_run,
            status: if dry_run { None } else { new_status(mode) },
            counts: Counts::default(),
            seen: HashSet::new(),
            in_chunk: HashSet::new(),
            chunk_bytes: 0,
        };
        let mut chunk = Vec::with_capacity(CHUNK_EVENTS);
        let mut held = Vec::new();
        let mut failures = Vec::new();
        for (i, line) in ndjson.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let line_no = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let parsed = parse_line(line_no, line).map_err(|reason| Failure {
                line_no,
                reason,
                line,
            });
            run.accept(parsed, &mut chunk, &mut held, &mut failures);
            // Progress NOTICEs come after everything read so far is written,
            // so that their counts are exact.
            let progress = progress_every > 0 && run.counts.processed % progress_every == 0;
            if progress {
                run.flush_all(client, &mut chunk, &mut held, &mut failures)?;
                notice!("backfill: {}", summary(&run.counts));
            } else if run.chunk_full(&chunk) {
                run.flush(client, &mut chunk, &mut held, &mut failures)?;
            }
        }
        run.flush_all(client, &mut chunk, &mut held, &mut failures)?;
        let c = run.counts;
        client
            .update(
                "UPDATE webhook_outbox.backfill_runs
                 SET finished_at = clock_timestamp(), processed = $2, created = $3, enqueued = $4, duplicates = $5, failed = $6
                 WHERE id = $1",
                None,
                &[
                    run.id.into(),
                    c.processed.into(),
                    c.created.into(),
                    c.enqueued.into(),
                    c.duplicates.into(),
                    c.failed.into(),
                ],
            )
            .map_err(spi_error)?;
        notice!(
            "backfill run {}{}: {}",
            run.id,
            if dry_run {
                " (dry run, nothing queued)"
            } else {
                ""
            },
            summary(&c)
        );
        Ok(c)
    })?;
    Ok(TableIterator::once((
        counts.processed,
        counts.created,
        counts.enqueued,
        counts.duplicates,
        counts.failed,
    )))
}

fn summary(c: &Counts) -> String {
    format!(
        "{} processed, {} created, {} enqueued, {} duplicates, {} failed",
        c.processed, c.created, c.enqueued, c.duplicates, c.failed
    )
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Off => "off",
        Mode::Shadow => "shadow",
        Mode::On => "on",
    }
}
