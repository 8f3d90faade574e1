//! One delivery pipeline: claim → rate limit → HTTP thread → settle. Used by the
//! background worker (each step in its own short transaction) and by
//! `run_once` (in the caller's transaction). The caller owns transactions;
//! the engine only runs statements.

mod rates;

use crate::settle::{self, AttemptResult, HealthEvent, HealthLock};
use crate::{guc, pg};
use pgrx::spi::{self, SpiClient};
use rates::with_rates;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use webhook_outbox_core::delivery::{self, Client, FailureClass, HttpConfig, Request, SigningKey};
use webhook_outbox_core::dispatch::{Dispatcher, Done, Job, Ticket, Waker};
use webhook_outbox_core::now_ms;
use webhook_outbox_core::ratelimit::Admit;

// Statements here run as the worker's superuser, or inside run_once: see
// sql/queries/README.md.
const CLAIM: &str = include_str!("../../sql/queries/claim.sql");
const NEXT_DUE: &str = include_str!("../../sql/queries/next_due.sql");
const ROUTE_INTAKE: &str = include_str!("../../sql/queries/route_intake.sql");

pub struct Engine {
    dispatcher: Dispatcher,
    http: HttpConfig,
    concurrency: usize,
    waker: Waker,
    /// Finished jobs taken from the dispatcher and not yet written by a committed
    /// settle: a settle that fails (a lock wait that times out) keeps them
    /// for the next one, instead of leaving them to be sent again.
    unsettled: Vec<Done>,
    /// Settles of `unsettled` that failed in a row.
    failed_settles: u32,
    /// Health events of endpoints whose row another session held at the
    /// last committed settle, for the next one; and those of the settle in
    /// progress.
    deferred_health: Vec<HealthEvent>,
    skipped_health: Vec<HealthEvent>,
}

/// Health events kept for endpoints whose row stays held: the newest.
const MAX_DEFERRED_HEALTH: usize = 10_000;

/// Settles that may fail in a row before the results they carry are given
/// up (their leases then bring the deliveries back).
const MAX_FAILED_SETTLES: u32 = 3;

fn wake_every() -> usize {
    guc::batch_size() / 2
}

/// A slow endpoint may hold this many request slots, so others always have one.
fn per_endpoint_slots(concurrency: usize) -> usize {
    (concurrency * 3 / 4).max(1)
}

/// What one settle step wrote.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tally {
    pub sent: u64,
    pub failed: u64,
}

impl Engine {
    /// `waker` is set whenever a job finishes.
    pub fn new(waker: Waker) -> Result<Engine, String> {
        let http = guc::http_config()?;
        let concurrency = guc::concurrency();
        let dispatcher = Dispatcher::new(
            Client::new(&http)?,
            concurrency,
            per_endpoint_slots(concurrency),
            wake_every(),
            waker.clone(),
        )
        .map_err(|e| format!("cannot start the delivery thread: {e}"))?;
        Ok(Engine {
            dispatcher,
            http,
            concurrency,
            waker,
            unsettled: Vec::new(),
            failed_settles: 0,
            deferred_health: Vec::new(),
            skipped_health: Vec::new(),
        })
    }

    /// Apply changed settings after SIGHUP. A new concurrency needs an idle dispatcher.
    pub fn reload(&mut self) -> Result<(), String> {
        let http = guc::http_config()?;
        self.dispatcher.set_wake_every(wake_every());
        if guc::concurrency() != self.concurrency && self.dispatcher.idle() {
            let mut unsettled = std::mem::take(&mut self.unsettled);
            unsettled.extend(self.dispatcher.take_done());
            *self = Engine::new(self.waker.clone())?;
            self.unsettled = unsettled;
        } else if http != self.http {
            self.dispatcher.set_client(Client::new(&http)?);
            self.http = http;
        }
        Ok(())
    }

    /// Something to settle: results, or queued jobs too late to start (to give back).
    pub fn has_results(&self) -> bool {
        !self.unsettled.is_empty() || self.dispatcher.has_done() || self.dispatcher.has_expired()
    }

    /// Deliveries claimed and not yet settled.
    pub fn outstanding(&self) -> usize {
        self.dispatcher.outstanding().0 + self.unsettled.len()
    }

    pub fn timeout(&self) -> Duration {
        self.http.timeout
    }

    /// Claim up to `max` deliveries. The jobs go to the HTTP thread through
    /// `submit`, once the claim has committed: a request must never leave
    /// for a lease that was rolled back.
    pub fn claim(&mut self, client: &mut SpiClient<'_>, max: usize) -> spi::Result<Batch> {
        if max == 0 {
            return Ok(Batch::default());
        }
        let batch = guc::batch_size();
        // An endpoint with a full batch outstanding waits; the others go on.
        let busy: Vec<i64> = self
            .dispatcher
            .outstanding()
            .1
            .into_iter()
            .filter(|(_, n)| *n >= batch)
            .map(|(e, _)| e)
            .collect();
        // Before the claim: its leases start later (clock_timestamp() in _claim).
        let start_by = Instant::now() + self.start_within();
        let rows = pg::execute(
            client,
            CLAIM,
            &[
                (max.min(i32::MAX as usize) as i32).into(),
                guc::lease_ms().into(),
                busy.into(),
                guc::rate_limit_rps().into(),
            ],
        )?;
        let now_ms = now_ms();
        let claimed: Vec<ClaimedRow> = rows
            .map(|row| ClaimedRow::read(&row))
            .collect::<spi::Result<_>>()?;
        let count = claimed.len();
        let mut jobs = Vec::with_capacity(count);
        let mut deferred: Vec<(Ticket, i64)> = Vec::new();
        let mut refused: Vec<AttemptResult> = Vec::new();
        // Deliveries of one endpoint deferred in this batch, so each gets its own later slot.
        let mut waiting: HashMap<i64, u32> = HashMap::new();
        with_rates(|rates| {
            for c in claimed {
                let ticket = c.ticket;
                let queued = waiting.get(&ticket.endpoint_id).copied().unwrap_or(0);
                if let Admit::At(at_us) =
                    rates.admit(ticket.endpoint_id, c.rps, now_ms * 1_000, queued)
                {
                    *waiting.entry(ticket.endpoint_id).or_default() += 1;
                    deferred.push((ticket, at_us / 1_000));
                    continue;
                }
                match c.into_request(now_ms / 1_000) {
                    Ok(request) => jobs.push(Job {
                        ticket,
                        request,
                        start_by,
                    }),
                    Err(error) => refused.push(failure(ticket, error)),
                }
            }
        });
        settle::release(client, &deferred)?;
        settle::settle(client, &refused, HealthLock::SkipLocked, &[])?;
        let deferred_until_ms = deferred.iter().map(|(_, at_ms)| *at_ms).min();
        Ok(Batch {
            count,
            jobs,
            deferred_until_ms,
        })
    }

    /// Hand claimed jobs to the HTTP thread (after the claim committed).
    pub fn submit(&self, jobs: Vec<Job>) {
        self.dispatcher.submit(jobs);
    }

    /// How long after its claim a request may still start: the lease less the
    /// request's timeout and the time to settle it.
    fn start_within(&self) -> Duration {
        Duration::from_millis(guc::lease_ms() as u64)
            .saturating_sub(self.http.timeout + guc::SETTLE_MARGIN)
    }

    /// Write back what the HTTP thread finished. Queued jobs of endpoints whose
    /// circuit just opened, and jobs too late to start, are put back. Call
    /// `settled` once the transaction has committed.
    pub fn settle(&mut self, client: &mut SpiClient<'_>) -> spi::Result<Tally> {
        self.dispatcher.release(Job::expired);
        if self.failed_settles >= MAX_FAILED_SETTLES {
            pgrx::log!(
                "webhook_outbox: {} results given up after {MAX_FAILED_SETTLES} failed settles; their leases will bring the deliveries back",
                self.unsettled.len()
            );
            self.unsettled.clear();
            self.failed_settles = 0;
        }
        // Counted as failed until `settled` says it committed.
        self.failed_settles += 1;
        self.unsettled.extend(self.dispatcher.take_done());
        let mut results = Vec::new();
        let mut released = Vec::new();
        for done in &self.unsettled {
            match done {
                Done::Attempted(ticket, outcome) => results.push(AttemptResult {
                    delivery_id: ticket.delivery_id,
                    endpoint_id: ticket.endpoint_id,
                    attempt_no: ticket.attempt_no,
                    max_attempts: ticket.max_attempts,
                    lease: ticket.lease,
                    status_code: outcome.status.map(i32::from),
                    duration_ms: Some(outcome.duration_ms.min(i32::MAX as u32) as i32),
                    error: outcome.error.clone(),
                    retry_after_ms: outcome.retry_after.map(|d| d.as_millis() as u64),
                    permanent: outcome.permanent,
                    response_body: outcome.response_prefix.clone(),
                    failure_class: outcome.failure.map(FailureClass::as_str),
                    remote_addr: outcome.remote_addr.map(|a| a.ip().to_string()),
                }),
                Done::Released(t) => released.push((*t, 0)),
            }
        }
        let written = settle::settle(
            client,
            &results,
            HealthLock::SkipLocked,
            &self.deferred_health,
        )?;
        self.skipped_health = written.skipped_health.clone();
        if written.stale > 0 {
            pgrx::log!(
                "webhook_outbox: {} results not written: their leases had ended and the deliveries were claimed again",
                written.stale
            );
        }
        settle::release(client, &released)?;
        if !written.open_circuits.is_empty() {
            self.dispatcher
                .release(|job| written.open_circuits.contains(&job.ticket.endpoint_id));
        }
        let sent = written
            .statuses
            .iter()
            .filter(|(_, s)| *s == "sent")
            .count() as u64;
        Ok(Tally {
            sent,
            failed: written.statuses.len() as u64 - sent,
        })
    }

    /// The last `settle` committed: its results are written.
    pub fn settled(&mut self) {
        self.unsettled.clear();
        self.failed_settles = 0;
        self.deferred_health = std::mem::take(&mut self.skipped_health);
        let excess = self
            .deferred_health
            .len()
            .saturating_sub(MAX_DEFERRED_HEALTH);
        self.deferred_health.drain(..excess);
    }

    /// Put every queued job back (shutdown); running ones finish on their own.
    pub fn release_queued(&self) {
        self.dispatcher.release(|_| true);
    }

    pub fn idle(&self) -> bool {
        self.dispatcher.idle()
    }
}

/// Move up to `max` of emit()'s events into deliveries (see `_route_intake`);
/// returns how many it moved.
pub fn route_intake(client: &mut SpiClient<'_>, max: usize) -> spi::Result<usize> {
    let max = max.min(i32::MAX as usize) as i32;
    let moved = pg::execute(client, ROUTE_INTAKE, &[max.into()])?
        .first()
        .get_one::<i32>()?;
    Ok(moved.unwrap_or(0).max(0) as usize)
}

/// Milliseconds until something is due, if anything is waiting.
pub fn next_due_ms(client: &mut SpiClient<'_>) -> spi::Result<Option<i64>> {
    pg::execute(client, NEXT_DUE, &[])?.first().get_one::<i64>()
}

/// What one claim took: the jobs to submit once it has committed, how many
/// deliveries it leased (those deferred by a rate limit included), and when
/// the first deferred one is due again (epoch milliseconds).
#[derive(Default)]
pub struct Batch {
    pub count: usize,
    pub jobs: Vec<Job>,
    pub deferred_until_ms: Option<i64>,
}

/// One row of `CLAIM`.
struct ClaimedRow {
    ticket: Ticket,
    event_id: String,
    payload: String,
    url: String,
    secret: String,
    /// Secrets replaced by a rotation and still in their overlap, newest first.
    retired: Vec<String>,
    headers: String,
    rps: f64,
}

impl ClaimedRow {
    fn read(row: &pgrx::spi::SpiHeapTupleData<'_>) -> spi::Result<ClaimedRow> {
        Ok(ClaimedRow {
            ticket: Ticket {
                delivery_id: row.get(1)?.unwrap_or_default(),
                endpoint_id: row.get(2)?.unwrap_or_default(),
                attempt_no: row.get(5)?.unwrap_or_default(),
                max_attempts: row.get(6)?.unwrap_or_default(),
                lease: row
                    .get::<pgrx::Uuid>(11)?
                    .map(|u| *u.as_bytes())
                    .unwrap_or_default(),
            },
            event_id: row.get(3)?.unwrap_or_default(),
            payload: row.get(4)?.unwrap_or_default(),
            url: row.get(7)?.unwrap_or_default(),
            secret: row.get(8)?.unwrap_or_default(),
            retired: row.get::<Vec<String>>(12)?.unwrap_or_default(),
            headers: row.get(9)?.unwrap_or_default(),
            rps: row.get(10)?.unwrap_or_default(),
        })
    }

    fn into_request(self, timestamp: i64) -> Result<Request, String> {
        let signing_keys = signing_keys(&self.secret, &self.retired)?;
        let headers = if self.headers == "{}" {
            Vec::new()
        } else {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&self.headers)
                .map_err(|e| format!("endpoint headers: {e}"))?
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        };
        Ok(Request {
            url: self.url,
            webhook_id: self.event_id,
            timestamp,
            body: self.payload,
            headers,
            signing_keys,
        })
    }
}

/// Decoded signing keys by secret, for this process: an ed25519 key costs
/// tens of microseconds to expand from its seed, once per endpoint, not once
/// per delivery.
const MAX_CACHED_KEYS: usize = 10_000;

thread_local! {
    static KEYS: std::cell::RefCell<HashMap<Box<str>, SigningKey>> = Default::default();
}

/// An endpoint's keys as requests are signed with them: its secret first,
/// then those of a rotation still in their overlap.
pub(crate) fn signing_keys(
    secret: &str,
    retired: &[impl AsRef<str>],
) -> Result<Vec<SigningKey>, String> {
    std::iter::once(secret)
        .chain(retired.iter().map(AsRef::as_ref))
        .map(signing_key)
        .collect()
}

fn signing_key(secret: &str) -> Result<SigningKey, String> {
    KEYS.with_borrow_mut(|keys| {
        if let Some(key) = keys.get(secret) {
            return Ok(key.clone());
        }
        let key = delivery::decode_secret(secret).map_err(|e| format!("endpoint secret: {e}"))?;
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(secret.into(), key.clone());
        Ok(key)
    })
}

/// A delivery that cannot be attempted at all (bad stored secret or headers).
fn failure(ticket: Ticket, error: String) -> AttemptResult {
    AttemptResult {
        delivery_id: ticket.delivery_id,
        endpoint_id: ticket.endpoint_id,
        attempt_no: ticket.attempt_no,
        max_attempts: ticket.max_attempts,
        lease: ticket.lease,
        status_code: None,
        duration_ms: None,
        error: Some(error),
        retry_after_ms: None,
        permanent: true,
        response_body: None,
        failure_class: Some(FailureClass::InvalidRequest.as_str()),
        remote_addr: None,
    }
}
