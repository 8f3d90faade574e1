//! `backfill`: historical events from NDJSON into the outbox.
//!
//! Lines are checked here (serde), so a bad line is reported and skipped
//! instead of failing the run. Routing is decided here too, from the endpoints
//! as they are when the call starts; the accepted events then go to Postgres a
//! chunk at a time, as arrays unnested by one INSERT. Run reports and failed
//! lines land in `backfill_runs` / `backfill_errors` (sql/operations.sql).

use super::endpoints::spi_error;
use super::{error, invalid};
use crate::delivery::check_event_key;
use crate::guc::{self, Mode};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Events per statement: enough to amortise a statement's cost, few enough to
/// keep its arrays small.
const CHUNK_EVENTS: usize = 5_000;
/// Failed lines reported by NOTICE; backfill_errors keeps all of them.
const NOTICE_LIMIT: i64 = 100;
/// How much of a failed line backfill_errors keeps.
const KEPT_LINE_BYTES: usize = 1_024;

/// The fields backfill reads. serde skips the rest of the object without
/// building it, which is most of the parsing cost saved.
#[derive(Deserialize)]
struct Fields {
    event_id: Option<Value>,
    event_type: Option<Value>,
    request_id: Option<Value>,
    schema_version: Option<Value>,
    actor: Option<Value>,
}

/// An accepted line.
#[derive(Debug)]
struct Event<'a> {
    line_no: i32,
    event_id: String,
    event_type: String,
    subject_id: String,
    payload: &'a str,
}

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

/// Check one line: a JSON object with the required fields, that jsonb can store.
fn parse_line(line_no: i32, line: &str, max_payload_bytes: usize) -> Result<Event<'_>, String> {
    let line = line.trim();
    if line.len() > max_payload_bytes {
        return Err(format!(
            "event of {} bytes exceeds webhook_outbox.max_payload_bytes ({max_payload_bytes})",
            line.len()
        ));
    }
    // serde would also read a JSON array into the struct, field by position.
    if !line.starts_with('{') {
        return Err(match serde_json::from_str::<Value>(line) {
            Ok(_) => "not a JSON object".to_owned(),
            Err(e) => format!("not valid JSON: {e}"),
        });
    }
    let fields: Fields = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    // jsonb cannot store U+0000. Most lines have no such escape: check those that do.
    if line.contains("\\u0000") && serde_json::from_str::<Value>(line).is_ok_and(|v| has_nul(&v)) {
        return Err("contains \\u0000, which jsonb cannot store".to_owned());
    }
    let event_id = required(fields.event_id.as_ref(), "event_id", true)?;
    check_event_key("event_id", &event_id)?;
    let event_type = required(fields.event_type.as_ref(), "event_type", false)?;
    check_event_key("event_type", &event_type)?;
    required(fields.request_id.as_ref(), "request_id", true)?;
    required(fields.schema_version.as_ref(), "schema_version", true)?;
    let user_id = fields.actor.as_ref().and_then(|actor| actor.get("user_id"));
    let subject_id = required(user_id, "actor.user_id", true)?;
    check_event_key("actor.user_id", &subject_id)?;
    Ok(Event {
        line_no,
        event_id,
        event_type,
        subject_id,
        payload: line,
    })
}

/// A required field: a non-empty string, or where `numbers` allows it a
/// number, kept as its JSON text.
fn required(value: Option<&Value>, name: &str, numbers: bool) -> Result<String, String> {
    match value {
        None | Some(Value::Null) => Err(format!("missing {name}")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if numbers => Ok(n.to_string()),
        Some(_) if numbers => Err(format!("{name} must be a non-empty string or a number")),
        Some(_) => Err(format!("{name} must be a non-empty string")),
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// One delivery row's endpoint and its effective max_attempts.
#[derive(Clone, Copy)]
struct Target {
    endpoint_id: i64,
    max_attempts: i32,
}

/// Where events go: the endpoint given, or (endpoint_id NULL) the enabled
/// endpoints subscribed to the event type, as emit() decides; read once.
struct Routes {
    fixed: Option<Target>,
    /// (target, enabled, event_types) of every endpoint.
    endpoints: Vec<(Target, bool, Option<Vec<String>>)>,
    by_type: HashMap<String, Vec<Target>>,
}

impl Routes {
    fn load(
        client: &SpiClient<'_>,
        endpoint_id: Option<i64>,
        max_attempts: Option<i32>,
    ) -> Result<Self, ErrorReport> {
        let rows = client
            .select(
                "SELECT id, enabled, event_types,
                        coalesce($2, max_attempts, webhook_outbox._setting('max_attempts')::integer)
                 FROM webhook_outbox.endpoints WHERE $1::bigint IS NULL OR id = $1",
                None,
                &[endpoint_id.into(), max_attempts.into()],
            )
            .map_err(spi_error)?;
        let mut endpoints = Vec::with_capacity(rows.len());
        for row in rows {
            let target = Target {
                endpoint_id: row.get(1).map_err(spi_error)?.unwrap_or_default(),
                max_attempts: row.get(4).map_err(spi_error)?.unwrap_or_default(),
            };
            let enabled = row.get(2).map_err(spi_error)?.unwrap_or(false);
            endpoints.push((
                target,
                enabled,
                row.get::<Vec<String>>(3).map_err(spi_error)?,
            ));
        }
        let fixed = match endpoint_id {
            None => None,
            Some(id) => Some(endpoints.first().map(|e| e.0).ok_or_else(|| {
                error(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("endpoint {id} does not exist"),
                    "Pass NULL to fan out to the subscribed endpoints, or create it with webhook_outbox.create_endpoint(url).",
                )
            })?),
        };
        Ok(Routes {
            fixed,
            endpoints,
            by_type: HashMap::new(),
        })
    }

    fn targets(&mut self, event_type: &str) -> &[Target] {
        if let Some(fixed) = &self.fixed {
            return std::slice::from_ref(fixed);
        }
        if !self.by_type.contains_key(event_type) {
            let subscribed = self
                .endpoints
                .iter()
                .filter(|(_, enabled, types)| {
                    *enabled
                        && types
                            .as_ref()
                            .is_none_or(|t| t.iter().any(|t| t == event_type))
                })
                .map(|(target, ..)| *target)
                .collect();
            self.by_type.insert(event_type.to_owned(), subscribed);
        }
        &self.by_type[event_type]
    }
}

/// A chunk's delivery rows that are not in the outbox yet. The check first
/// spares the duplicates the jsonb parsing and speculative insertion of ON
/// CONFLICT, which cost ten times more (a rerun of a file is cheap).
macro_rules! new_rows {
    () => {
        " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[])
               AS u(endpoint_id, event_id, event_type, payload, subject_id, max_attempts)
          WHERE NOT EXISTS (SELECT 1 FROM webhook_outbox.deliveries d
                            WHERE d.endpoint_id = u.endpoint_id AND d.event_id = u.event_id) "
    };
}

/// Returns (events with at least one new delivery, deliveries created).
/// ON CONFLICT still: a concurrent enqueue of the same event must not abort the run.
const INSERT_CHUNK: &str = concat!(
    "WITH created AS (
         INSERT INTO webhook_outbox.deliveries AS d
             (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts)
         SELECT u.endpoint_id, u.event_id, u.event_type, u.payload::jsonb, u.subject_id, $7, u.max_attempts",
    new_rows!(),
    "ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING
         RETURNING d.event_id
     )
     SELECT count(DISTINCT event_id COLLATE \"C\"), count(*) FROM created"
);

/// The same answer without writing.
const COUNT_CHUNK: &str = concat!(
    "SELECT count(DISTINCT u.event_id COLLATE \"C\"), count(*)",
    new_rows!()
);

/// One call's state: settings, routes, counts, and the ids seen in the input.
struct Run {
    id: i64,
    dry_run: bool,
    status: &'static str,
    routes: Routes,
    counts: Counts,
    seen: HashSet<String>,
}

impl Run {
    /// Sort one line into the chunk, the failures, or the duplicates.
    fn accept<'a>(
        &mut self,
        parsed: Result<Event<'a>, Failure<'a>>,
        chunk: &mut Vec<Event<'a>>,
        failures: &mut Vec<Failure<'a>>,
    ) {
        self.counts.processed += 1;
        match parsed {
            Err(f) => failures.push(f),
            Ok(e) if self.seen.contains(&e.event_id) => self.counts.duplicates += 1,
            Ok(e) if self.routes.targets(&e.event_type).is_empty() => failures.push(Failure {
                line_no: e.line_no,
                reason: format!(
                    "no enabled endpoint subscribes to event_type '{}'",
                    e.event_type
                ),
                line: e.payload,
            }),
            Ok(e) => {
                self.seen.insert(e.event_id.clone());
                chunk.push(e);
            }
        }
    }

    /// Write (or count) a chunk of accepted events, then report the failed lines.
    fn flush<'a>(
        &mut self,
        client: &mut SpiClient<'_>,
        chunk: &mut Vec<Event<'a>>,
        failures: &mut Vec<Failure<'a>>,
    ) -> Result<(), ErrorReport> {
        if !chunk.is_empty() {
            let mut endpoint_ids = Vec::with_capacity(chunk.len());
            let mut max_attempts = Vec::with_capacity(chunk.len());
            let mut rows: Vec<&Event> = Vec::with_capacity(chunk.len());
            for e in chunk.iter() {
                for t in self.routes.targets(&e.event_type) {
                    endpoint_ids.push(t.endpoint_id);
                    max_attempts.push(t.max_attempts);
                    rows.push(e);
                }
            }
            let mut args = vec![
                endpoint_ids.into(),
                rows.iter()
                    .map(|e| e.event_id.as_str())
                    .collect::<Vec<_>>()
                    .into(),
                rows.iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>()
                    .into(),
                rows.iter().map(|e| e.payload).collect::<Vec<_>>().into(),
                rows.iter()
                    .map(|e| e.subject_id.as_str())
                    .collect::<Vec<_>>()
                    .into(),
                max_attempts.into(),
            ];
            let result = if self.dry_run {
                client.select(COUNT_CHUNK, None, &args)
            } else {
                args.push(self.status.into());
                client.update(INSERT_CHUNK, None, &args)
            };
            let (created, enqueued) = result
                .and_then(|t| t.first().get_two::<i64, i64>())
                .map_err(spi_error)?;
            let created = created.unwrap_or(0);
            self.counts.created += created;
            self.counts.enqueued += enqueued.unwrap_or(0);
            self.counts.duplicates += chunk.len() as i64 - created;
            chunk.clear();
        }
        self.report(client, failures)
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
    let not_null = |name: &str| {
        error(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be NULL"),
            "",
        )
    };
    let ndjson = ndjson.ok_or_else(|| {
        not_null("ndjson").set_hint(
            "Pass the file's content, e.g. in psql: \\set content `cat events.ndjson`, then backfill(:'content').",
        )
    })?;
    let dry_run = dry_run.ok_or_else(|| not_null("dry_run"))?;
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
        let routes = Routes::load(client, endpoint_id, max_attempts)?;
        let (id, max_payload_bytes) = client
            .update(
                "INSERT INTO webhook_outbox.backfill_runs (endpoint_id, dry_run, mode) VALUES ($1, $2, $3)
                 RETURNING id, webhook_outbox._setting('max_payload_bytes')::integer",
                None,
                &[endpoint_id.into(), dry_run.into(), mode_name(mode).into()],
            )
            .and_then(|t| t.first().get_two::<i64, i32>())
            .map_err(spi_error)?;
        let mut run = Run {
            id: id.unwrap_or_default(),
            dry_run,
            status: if mode == Mode::Shadow {
                "shadow"
            } else {
                "pending"
            },
            routes,
            counts: Counts::default(),
            seen: HashSet::new(),
        };
        let max_payload_bytes = max_payload_bytes.unwrap_or(i32::MAX) as usize;
        let mut chunk = Vec::with_capacity(CHUNK_EVENTS);
        let mut failures = Vec::new();
        for (i, line) in ndjson.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let line_no = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let parsed = parse_line(line_no, line, max_payload_bytes).map_err(|reason| Failure {
                line_no,
                reason,
                line,
            });
            run.accept(parsed, &mut chunk, &mut failures);
            // Chunks end on progress boundaries, so each progress NOTICE has exact counts.
            let progress = progress_every > 0 && run.counts.processed % progress_every == 0;
            if chunk.len() == CHUNK_EVENTS || progress {
                run.flush(client, &mut chunk, &mut failures)?;
            }
            if progress {
                notice!("backfill: {}", summary(&run.counts));
            }
        }
        run.flush(client, &mut chunk, &mut failures)?;
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

extension_sql!(
    r#"
COMMENT ON FUNCTION backfill(text, bigint, boolean, integer, integer) IS
'Queue historical events from NDJSON text, one JSON object per line with event_id, event_type, request_id, schema_version and actor.user_id '
'(the whole object is the payload, actor.user_id the subject_id). endpoint_id NULL fans out to the enabled endpoints subscribed to '
'each event_type, as emit() does (endpoints as they are when the call starts). processed = non-blank lines = created + duplicates + failed: '
'created counts events that got at least one new delivery, enqueued the delivery rows written (one per event and endpoint), duplicates '
'the events already in the outbox for every target endpoint or repeated in the input, failed the lines rejected (bad JSON, missing '
'field, over max_payload_bytes, no subscribed endpoint), each reported by NOTICE (the first 100) and in backfill_errors. mode shadow '
'records shadow rows; mode off refuses to run except as a dry run. dry_run queues nothing and returns the counts a real run would; '
'its report is still kept in backfill_runs/backfill_errors. max_attempts overrides the endpoint''s; progress_every N prints a '
'NOTICE every N lines.';
"#,
    name = "backfill_comment",
    requires = [backfill],
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    #[cfg(test)]
    use super::parse_line;
    use pgrx::prelude::*;

    #[cfg(test)]
    const MAX: usize = 256 * 1024;

    fn line(id: &str, event_type: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_type":"{event_type}","request_id":"req-{id}","schema_version":1,"actor":{{"user_id":"u-{id}"}}}}"#
        )
    }

    fn endpoint(name: &str, types: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT webhook_outbox.create_endpoint('https://example.com/{name}', '{name}', {types})"
        ))
        .unwrap()
        .unwrap()
    }

    /// (processed, created, enqueued, duplicates, failed)
    fn backfill(ndjson: &str, args: &str) -> (i64, i64, i64, i64, i64) {
        let t = Spi::connect_mut(|c| {
            c.update(
                &format!("SELECT processed, created, enqueued, duplicates, failed FROM webhook_outbox.backfill($1 {args})"),
                None,
                &[ndjson.into()],
            )
            .and_then(|t| {
                let t = t.first();
                Ok((t.get::<i64>(1)?, t.get::<i64>(2)?, t.get::<i64>(3)?, t.get::<i64>(4)?, t.get::<i64>(5)?))
            })
        })
        .unwrap();
        (
            t.0.unwrap(),
            t.1.unwrap(),
            t.2.unwrap(),
            t.3.unwrap(),
            t.4.unwrap(),
        )
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    #[test]
    fn parse_line_accepts_the_required_fields() {
        let l = r#" {"event_id":7,"event_type":"order.paid","request_id":"r","schema_version":"1.0","actor":{"user_id":42},"x":[1]} "#;
        let e = parse_line(3, l, MAX).unwrap();
        assert_eq!(
            (
                e.line_no,
                e.event_id.as_str(),
                e.event_type.as_str(),
                e.subject_id.as_str()
            ),
            (3, "7", "order.paid", "42")
        );
        assert_eq!(e.payload, l.trim());
    }

    #[test]
    fn parse_line_reasons() {
        let cases = [
            ("nope", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (
                r#"{"event_type":"t","request_id":"r","schema_version":1,"actor":{"user_id":"u"}}"#,
                "missing event_id",
            ),
            (
                r#"{"event_id":"","event_type":"t"}"#,
                "event_id must be a non-empty string or a number",
            ),
            (
                r#"{"event_id":"e","event_type":5}"#,
                "event_type must be a non-empty string",
            ),
            (
                r#"{"event_id":"e","event_type":"t","schema_version":1}"#,
                "missing request_id",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r"}"#,
                "missing schema_version",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r","schema_version":1,"actor":{}}"#,
                "missing actor.user_id",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r","schema_version":1,"actor":"u"}"#,
                "missing actor.user_id",
            ),
            (
                r#"{"event_id":"e","event_type":"t","request_id":"r","schema_version":1,"actor":{"user_id":null}}"#,
                "missing actor.user_id",
            ),
            (r#"{"event_id":"e\u0000","event_type":"t"}"#, "\\u0000"),
        ];
        for (l, reason) in cases {
            let err = parse_line(1, l, MAX).unwrap_err();
            assert!(err.contains(reason), "{l}: {err}");
        }
        let err = parse_line(1, &line("e", "t"), 20).unwrap_err();
        assert!(
            err.contains("exceeds webhook_outbox.max_payload_bytes (20)"),
            "{err}"
        );
        // An escaped backslash before u0000 is not a NUL.
        assert!(parse_line(1, &line(r"a\\u0000", "t"), MAX).is_ok());
    }

    #[pg_test]
    fn backfill_counts_fan_out_and_failures() {
        let a = endpoint("a", "ARRAY['order.paid']");
        let b = endpoint("b", "NULL");
        let input = [
            line("e1", "order.paid"),
            String::new(),
            r#"{"event_id":"e2","event_type":"user.created","request_id":"r2","schema_version":"1.0","actor":{"user_id":42}}"#.to_owned(),
            line("e1", "order.paid"),
            "not json".to_owned(),
            r#"{"event_id":"e3","event_type":"x","request_id":"r3","schema_version":1}"#.to_owned(),
            "   ".to_owned(),
        ]
        .join("\n");
        // e1 → a and b, e2 → b; the second e1 is a duplicate; lines 5 and 6 fail.
        assert_eq!(backfill(&input, ""), (5, 2, 3, 1, 2));
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM webhook_outbox.deliveries WHERE endpoint_id = {a}"
            )),
            1
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM webhook_outbox.deliveries WHERE endpoint_id = {b}"
            )),
            2
        );
        let (subject, payload_ok) = Spi::get_two::<String, bool>(
            "SELECT subject_id, payload = '{\"event_id\":\"e2\",\"event_type\":\"user.created\",\"request_id\":\"r2\",\"schema_version\":\"1.0\",\"actor\":{\"user_id\":42}}'::jsonb
             FROM webhook_outbox.deliveries WHERE event_id = 'e2'",
        )
        .unwrap();
        assert_eq!((subject.as_deref(), payload_ok), (Some("42"), Some(true)));
        assert_eq!(count("SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'pending' AND max_attempts = 5"), 3);
        let errors = Spi::get_one::<String>(
            "SELECT string_agg(line_no || ': ' || reason, '; ' ORDER BY line_no) FROM webhook_outbox.backfill_errors
             WHERE run_id = (SELECT max(id) FROM webhook_outbox.backfill_runs)",
        )
        .unwrap()
        .unwrap();
        assert!(errors.starts_with("5: not valid JSON"), "{errors}");
        assert!(errors.contains("6: missing actor.user_id"), "{errors}");
        let run = Spi::get_two::<i64, bool>(
            "SELECT processed, finished_at IS NOT NULL AND NOT dry_run AND run_by = session_user
             FROM webhook_outbox.backfill_runs ORDER BY id DESC LIMIT 1",
        )
        .unwrap();
        assert_eq!(run, (Some(5), Some(true)));

        // The same file again creates nothing.
        assert_eq!(backfill(&input, ""), (5, 0, 0, 3, 2));
        assert_eq!(count("SELECT count(*) FROM webhook_outbox.deliveries"), 3);
    }

    #[pg_test]
    fn backfill_dedupes_against_the_outbox_per_endpoint() {
        let a = endpoint("a", "NULL");
        endpoint("b", "NULL");
        Spi::run(&format!(
            "SELECT webhook_outbox.enqueue({a}, 'order.paid', '{{}}', 'e1')"
        ))
        .unwrap();
        let input = format!("{}\n{}", line("e1", "order.paid"), line("e2", "order.paid"));
        // Fan-out: e1 is new for b only, e2 for both.
        assert_eq!(backfill(&input, ""), (2, 2, 3, 0, 0));
        // One endpoint: both are there already.
        assert_eq!(
            backfill(&input, &format!(", endpoint_id => {a}")),
            (2, 0, 0, 2, 0)
        );
        // The enqueued payload was not replaced.
        assert_eq!(
            count("SELECT count(*) FROM webhook_outbox.deliveries WHERE payload = '{}'"),
            1
        );
    }

    #[pg_test]
    fn backfill_dry_run_counts_like_the_real_run_and_writes_nothing() {
        endpoint("a", "ARRAY['order.paid']");
        endpoint("b", "NULL");
        Spi::run("SELECT webhook_outbox.emit('order.paid', '{}', 'e1')").unwrap();
        let input = [
            line("e1", "order.paid"),
            line("e2", "user.created"),
            line("e2", "x"),
            "{".to_owned(),
        ]
        .join("\n");
        let before = count("SELECT count(*) FROM webhook_outbox.deliveries");
        let dry = backfill(&input, ", dry_run => true");
        assert_eq!(
            count("SELECT count(*) FROM webhook_outbox.deliveries"),
            before
        );
        assert_eq!(dry, backfill(&input, ""));
        assert_eq!(dry, (4, 1, 1, 2, 1));
        assert_eq!(
            count("SELECT count(*) FROM webhook_outbox.backfill_runs WHERE dry_run"),
            1
        );
    }

    #[pg_test]
    fn backfill_to_one_endpoint_ignores_subscriptions_and_sets_max_attempts() {
        let a = endpoint("a", "ARRAY['order.paid']");
        let input = format!(
            "{}\n{}",
            line("e1", "user.created"),
            line("e2", "order.paid")
        );
        assert_eq!(
            backfill(
                &input,
                &format!(", endpoint_id => {a}, max_attempts => 3, progress_every => 1")
            ),
            (2, 2, 2, 0, 0)
        );
        assert_eq!(
            count("SELECT count(*) FROM webhook_outbox.deliveries WHERE max_attempts = 3"),
            2
        );
    }

    #[pg_test]
    fn backfill_reports_lines_no_endpoint_wants() {
        endpoint("a", "ARRAY['order.paid']");
        Spi::run("UPDATE webhook_outbox.endpoints SET enabled = false WHERE name = 'a'").unwrap();
        assert_eq!(backfill(&line("e1", "order.paid"), ""), (1, 0, 0, 0, 1));
        let reason = Spi::get_one::<String>("SELECT reason FROM webhook_outbox.backfill_errors")
            .unwrap()
            .unwrap();
        assert_eq!(
            reason,
            "no enabled endpoint subscribes to event_type 'order.paid'"
        );
    }

    #[pg_test]
    fn backfill_follows_mode_and_max_payload_bytes() {
        endpoint("a", "NULL");
        Spi::run("SET LOCAL webhook_outbox.mode = 'shadow'").unwrap();
        assert_eq!(backfill(&line("e1", "t"), ""), (1, 1, 1, 0, 0));
        assert_eq!(
            count("SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'shadow'"),
            1
        );
        Spi::run("SET LOCAL webhook_outbox.mode = 'off'").unwrap();
        assert_eq!(
            backfill(&line("e2", "t"), ", dry_run => true"),
            (1, 1, 1, 0, 0)
        );
        Spi::run("SET LOCAL webhook_outbox.mode = 'on'").unwrap();
        Spi::run("SET LOCAL webhook_outbox.max_payload_bytes = 50").unwrap();
        assert_eq!(backfill(&line("e3", "t"), ""), (1, 0, 0, 0, 1));
    }

    #[pg_test(error = "webhook_outbox.mode is off: backfill would record nothing")]
    fn backfill_refuses_mode_off() {
        Spi::run("SET LOCAL webhook_outbox.mode = 'off'").unwrap();
        backfill(&line("e1", "t"), "");
    }

    #[pg_test(error = "ndjson must not be NULL")]
    fn backfill_rejects_null_input() {
        Spi::run("SELECT webhook_outbox.backfill(NULL)").unwrap();
    }

    #[pg_test(error = "endpoint 999 does not exist")]
    fn backfill_rejects_an_unknown_endpoint() {
        backfill("", ", endpoint_id => 999");
    }

    #[pg_test(error = "max_attempts must be between 1 and 100, got 0")]
    fn backfill_rejects_bad_max_attempts() {
        backfill("", ", max_attempts => 0");
    }

    #[pg_test(error = "progress_every must be 0 (no progress) or more, got -1")]
    fn backfill_rejects_negative_progress() {
        backfill("", ", progress_every => -1");
    }
}
