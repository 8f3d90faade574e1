//! The job dispatcher: the delivery thread and what decides which claimed
//! job it starts next. Plain Rust: no Postgres call happens here.
//!
//! One thread runs a tokio runtime with up to `concurrency` requests in
//! flight: waiting on a socket costs nothing there, where a blocking thread
//! per request paid a sleep and a wake-up each time. Claimed jobs wait in one
//! queue per endpoint; a free slot takes the next job round-robin from an
//! endpoint that has fewer than its share of the slots running (see
//! `State::share`), so slow or dead endpoints never hold them all.
//! Finished jobs are collected by the main thread, which is woken through a
//! [`Waker`] it waits on beside its latch.

use crate::delivery::{Client, Outcome, Request};
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::Notify;

/// What the settle step needs to know about a delivery besides the HTTP outcome.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub attempt_no: i32,
    pub max_attempts: i32,
    /// `deliveries.lease_token` of this claim: settling presents it, and a
    /// delivery claimed again since (a new token) is not changed.
    pub lease: [u8; 16],
}

pub struct Job {
    pub ticket: Ticket,
    pub request: Request,
    /// The last moment the request may start and still end (timeout, settle)
    /// within the lease; later, another worker may already have claimed it.
    pub start_by: Instant,
}

impl Job {
    pub fn expired(&self) -> bool {
        Instant::now() >= self.start_by
    }
}

pub enum Done {
    Attempted(Ticket, Outcome),
    /// Not sent (endpoint blocked, lease running short, shutdown): put back.
    Released(Ticket),
}

#[derive(Default)]
struct State {
    queues: HashMap<i64, VecDeque<Job>>,
    /// Endpoints with queued jobs and a free running slot, in turn order;
    /// `in_ready` holds the same ids, so that asking is O(1) with thousands.
    ready: VecDeque<i64>,
    in_ready: HashSet<i64>,
    running: HashMap<i64, usize>,
    /// Totals over all endpoints, kept so that the wake-up rule is O(1).
    queued_total: usize,
    running_total: usize,
    done: Vec<Done>,
    stopping: bool,
}

impl State {
    /// How many requests one endpoint may have running: a fair share of
    /// the slots among the endpoints with work, and never more than
    /// `per_endpoint`. Two slow receivers then cannot take every slot from a
    /// third, fast one.
    fn share(&self, shared: &Shared) -> usize {
        (shared.concurrency / self.queues.len().max(1)).clamp(1, shared.per_endpoint)
    }

    /// Queue a claimed job behind its endpoint's others.
    fn queue(&mut self, job: Job, shared: &Shared) {
        let endpoint = job.ticket.endpoint_id;
        self.queues.entry(endpoint).or_default().push_back(job);
        self.queued_total += 1;
        if self.runnable(endpoint, shared) {
            self.push_ready(endpoint);
        }
    }

    fn push_ready(&mut self, endpoint: i64) {
        if self.in_ready.insert(endpoint) {
            self.ready.push_back(endpoint);
        }
    }

    fn pop_ready(&mut self) -> Option<i64> {
        let endpoint = self.ready.pop_front()?;
        self.in_ready.remove(&endpoint);
        Some(endpoint)
    }

    /// After an endpoint's queue or running count went down: forget it if it
    /// has nothing queued or running (the others' share grows with that), or
    /// put it back in turn if it may start another request.
    fn tidy(&mut self, endpoint: i64, shared: &Shared) {
        let idle = self.queues.get(&endpoint).is_none_or(VecDeque::is_empty)
            && self.running.get(&endpoint).copied().unwrap_or(0) == 0;
        if idle {
            let share = self.share(shared);
            self.queues.remove(&endpoint);
            self.running.remove(&endpoint);
            // The others' share may have grown, and some may run more now.
            // With more endpoints than slots it stays at one: nothing to look at.
            if self.share(shared) > share {
                self.refill(shared);
            }
        } else if self.runnable(endpoint, shared) {
            self.push_ready(endpoint);
        }
    }

    fn refill(&mut self, shared: &Shared) {
        let runnable: Vec<i64> = self
            .queues
            .keys()
            .copied()
            .filter(|e| self.runnable(*e, shared))
            .collect();
        for endpoint in runnable {
            self.push_ready(endpoint);
        }
    }

    fn runnable(&self, endpoint: i64, shared: &Shared) -> bool {
        self.queues.get(&endpoint).is_some_and(|q| !q.is_empty())
            && self.running.get(&endpoint).copied().unwrap_or(0) < self.share(shared)
            && !self.in_ready.contains(&endpoint)
    }
}

/// An eventfd the main thread waits on (beside its latch) and other threads
/// write to when they have something for it.
#[derive(Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Waker(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // An eventfd counter write only fails on overflow, which a reader prevents.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the counter before looking for work.
    pub fn clear(&self) {
        let mut counter = 0u64;
        unsafe { libc::read(self.0.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the dispatcher: jobs were queued, a slot came free, or stop.
    work: Notify,
    client: RwLock<Arc<Client>>,
    concurrency: usize,
    per_endpoint: usize,
    /// Wake the main thread when this many results wait, or when the queue
    /// has dropped to this many jobs (time to claim more), or when all is done:
    /// one transaction per batch, not one per result.
    wake_every: AtomicUsize,
    waker: Waker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking thread cannot leave State half-updated (no code that
        // can panic runs under the lock), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    pub fn new(
        client: Client,
        concurrency: usize,
        per_endpoint: usize,
        wake_every: usize,
        waker: Waker,
    ) -> std::io::Result<Dispatcher> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Notify::new(),
            client: RwLock::new(Arc::new(client)),
            concurrency: concurrency.max(1),
            per_endpoint: per_endpoint.max(1),
            wake_every: AtomicUsize::new(wake_every.max(1)),
            waker,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("webhook_outbox-http".into())
                .spawn(move || {
                    block_signals();
                    runtime.block_on(dispatch(shared));
                    // Dropping the runtime here aborts the requests still in flight.
                })?
        };
        Ok(Dispatcher {
            shared,
            thread: Some(thread),
        })
    }

    pub fn set_wake_every(&self, n: usize) {
        self.shared.wake_every.store(n.max(1), Ordering::Relaxed);
    }

    pub fn set_client(&self, client: Client) {
        *self
            .shared
            .client
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(client);
    }

    pub fn submit(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut state = self.shared.lock();
        for job in jobs {
            state.queue(job, &self.shared);
        }
        drop(state);
        self.shared.work.notify_one();
    }

    /// Finished jobs since the last call.
    pub fn take_done(&self) -> Vec<Done> {
        std::mem::take(&mut self.shared.lock().done)
    }

    /// Whether a queued job has waited past its `start_by` (to be given back).
    pub fn has_expired(&self) -> bool {
        self.shared
            .lock()
            .queues
            .values()
            .filter_map(VecDeque::front)
            .any(Job::expired)
    }

    pub fn has_done(&self) -> bool {
        !self.shared.lock().done.is_empty()
    }

    /// Claimed and not yet reported back, per endpoint and in total.
    pub fn outstanding(&self) -> (usize, HashMap<i64, usize>) {
        let state = self.shared.lock();
        let mut per: HashMap<i64, usize> =
            state.queues.iter().map(|(e, q)| (*e, q.len())).collect();
        for (e, n) in &state.running {
            *per.entry(*e).or_default() += n;
        }
        per.retain(|_, n| *n > 0);
        (per.values().sum::<usize>() + state.done.len(), per)
    }

    /// Give back the queued (not running) jobs for which `give_back` holds;
    /// they come out of `take_done` as `Done::Released`.
    pub fn release(&self, give_back: impl Fn(&Job) -> bool) {
        let mut state = self.shared.lock();
        let State { queues, done, .. } = &mut *state;
        let before = done.len();
        for queue in queues.values_mut() {
            queue.retain(|job| {
                let released = give_back(job);
                if released {
                    done.push(Done::Released(job.ticket));
                }
                !released
            });
        }
        let released = done.len() > before;
        state.queued_total = state.queues.values().map(VecDeque::len).sum();
        // An endpoint left with no work must not keep counting in the shares.
        let emptied: Vec<i64> = state
            .queues
            .iter()
            .filter(|(_, q)| q.is_empty())
            .map(|(e, _)| *e)
            .collect();
        for endpoint in emptied {
            state.tidy(endpoint, &self.shared);
        }
        drop(state);
        if released {
            self.shared.waker.wake();
        }
    }

    /// Nothing queued or running any more (finished jobs may still await `take_done`).
    pub fn idle(&self) -> bool {
        let state = self.shared.lock();
        state.queued_total == 0 && state.running_total == 0
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start every job a free slot allows, then sleep until something changes.
async fn dispatch(shared: Arc<Shared>) {
    loop {
        loop {
            let job = {
                let mut state = shared.lock();
                if state.stopping {
                    return;
                }
                match next_job(&shared, &mut state) {
                    Some(job) => job,
                    None => break,
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let client = shared
                    .client
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let outcome = client.send(&job.request).await;
                finish(&shared, job.ticket, outcome);
            });
        }
        // A notification sent since the lock was dropped is kept as a permit.
        shared.work.notified().await;
    }
}

/// The next job to start: round-robin over endpoints with a free slot.
fn next_job(shared: &Shared, state: &mut State) -> Option<Job> {
    while state.running_total < shared.concurrency {
        let endpoint = state.pop_ready()?;
        // Its share shrank since it queued (more endpoints have work): its
        // next finished request puts it back in turn.
        if state.running.get(&endpoint).copied().unwrap_or(0) >= state.share(shared) {
            continue;
        }
        let Some(job) = state.queues.get_mut(&endpoint).and_then(|q| q.pop_front()) else {
            continue;
        };
        state.queued_total -= 1;
        if job.expired() {
            // Sent now, it could still be running when its lease ends.
            state.done.push(Done::Released(job.ticket));
            shared.waker.wake();
            state.tidy(endpoint, shared);
            continue;
        }
        *state.running.entry(endpoint).or_default() += 1;
        state.running_total += 1;
        if state.queued_total == shared.wake_every.load(Ordering::Relaxed) {
            shared.waker.wake();
        }
        if state.runnable(endpoint, shared) {
            state.push_ready(endpoint);
        }
        return Some(job);
    }
    None
}

/// Record a finished request and free its slot.
fn finish(shared: &Shared, ticket: Ticket, outcome: Outcome) {
    let endpoint = ticket.endpoint_id;
    let mut state = shared.lock();
    if let Some(n) = state.running.get_mut(&endpoint) {
        *n -= 1;
    }
    state.running_total -= 1;
    state.tidy(endpoint, shared);
    state.done.push(Done::Attempted(ticket, outcome));
    let wake = state.done.len() >= shared.wake_every.load(Ordering::Relaxed)
        || (state.queued_total == 0 && state.running_total == 0);
    drop(state);
    shared.work.notify_one();
    if wake {
        shared.waker.wake();
    }
}

/// Postgres' signal handlers must run on the main thread, where they set its latch.
pub fn block_signals() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::test_server::{response, serve};
    use crate::delivery::{parse_cidrs, HttpConfig};
    use std::time::Duration;

    fn client() -> Client {
        Client::new(&HttpConfig {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            user_agent: "webhook_outbox-test/1".into(),
            ca_file: None,
            allowed_cidrs: parse_cidrs("127.0.0.0/8").expect("test CIDRs"),
            allow_http: true,
            http2: true,
            max_connections: 8,
        })
        .expect("client")
    }

    /// What the delivery thread works on, without the thread: the tests call
    /// `next_job` and `finish` themselves.
    fn shared(concurrency: usize, per_endpoint: usize) -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            work: Notify::new(),
            client: RwLock::new(Arc::new(client())),
            concurrency,
            per_endpoint,
            wake_every: AtomicUsize::new(1_000),
            waker: Waker::new().expect("eventfd"),
        }
    }

    fn job(endpoint_id: i64, delivery_id: i64, url: &str) -> Job {
        Job {
            ticket: Ticket {
                delivery_id,
                endpoint_id,
                attempt_no: 1,
                max_attempts: 5,
                lease: [0; 16],
            },
            request: Request {
                url: url.to_owned(),
                webhook_id: format!("evt_{delivery_id}"),
                timestamp: 1_700_000_000,
                body: "{}".into(),
                headers: vec![],
                signing_keys: vec![crate::delivery::SigningKey::Hmac(vec![7; 24].into())],
            },
            start_by: Instant::now() + Duration::from_secs(600),
        }
    }

    /// `n` jobs of `endpoint_id`, with delivery ids `endpoint_id * 100 + 1..`.
    fn jobs(endpoint_id: i64, n: i64) -> Vec<Job> {
        (1..=n)
            .map(|i| job(endpoint_id, endpoint_id * 100 + i, "http://127.0.0.1:9/"))
            .collect()
    }

    /// Queue jobs as `Dispatcher::submit` does.
    fn submit(shared: &Shared, jobs: Vec<Job>) {
        let mut state = shared.lock();
        for job in jobs {
            state.queue(job, shared);
        }
    }

    /// Start every job the free slots allow; their tickets in start order.
    fn start_all(shared: &Shared) -> Vec<Ticket> {
        let mut state = shared.lock();
        std::iter::from_fn(|| next_job(shared, &mut state))
            .map(|job| job.ticket)
            .collect()
    }

    fn endpoints(started: &[Ticket]) -> Vec<i64> {
        started.iter().map(|t| t.endpoint_id).collect()
    }

    fn running(shared: &Shared, endpoint_id: i64) -> usize {
        shared
            .lock()
            .running
            .get(&endpoint_id)
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn share_divides_the_slots_among_endpoints_with_work() {
        let s = shared(16, 12);
        let share = |s: &Shared| s.lock().share(s);
        assert_eq!(share(&s), 12, "no endpoint: the per-endpoint cap");
        submit(&s, jobs(1, 1));
        assert_eq!(share(&s), 12, "one endpoint: capped at per_endpoint");
        submit(&s, jobs(2, 1));
        assert_eq!(share(&s), 8);
        submit(&s, jobs(3, 1));
        assert_eq!(share(&s), 5);
        for e in 4..=20 {
            submit(&s, jobs(e, 1));
        }
        assert_eq!(share(&s), 1, "more endpoints than slots: one each");
    }

    #[test]
    fn endpoints_with_queued_jobs_take_turns() {
        let s = shared(16, 12);
        submit(&s, jobs(1, 3));
        submit(&s, jobs(2, 3));
        let started = start_all(&s);
        assert_eq!(endpoints(&started), [1, 2, 1, 2, 1, 2]);
        let ids: Vec<i64> = started.iter().map(|t| t.delivery_id).collect();
        assert_eq!(ids, [101, 201, 102, 202, 103, 203], "each queue in order");
        let state = s.lock();
        assert_eq!((state.queued_total, state.running_total), (0, 6));
    }

    #[test]
    fn an_endpoint_never_runs_more_than_its_share() {
        // Five slots, two endpoints: a share of two each leaves a slot free.
        let s = shared(5, 5);
        submit(&s, jobs(1, 10));
        submit(&s, jobs(2, 10));
        assert_eq!(endpoints(&start_all(&s)), [1, 2, 1, 2]);
        assert_eq!((running(&s, 1), running(&s, 2)), (2, 2));
        assert!(start_all(&s).is_empty(), "both at their share");
    }

    #[test]
    fn freed_slots_go_to_an_endpoint_below_its_share() {
        let s = shared(4, 4);
        submit(&s, jobs(1, 10));
        let first = start_all(&s);
        assert_eq!(
            endpoints(&first),
            [1, 1, 1, 1],
            "alone, it may take every slot"
        );
        // A second endpoint halves the share; endpoint 1 is over it now.
        submit(&s, jobs(2, 10));
        assert!(start_all(&s).is_empty(), "no free slot");
        let mut started = Vec::new();
        for ticket in &first {
            finish(&s, *ticket, Outcome::default());
            started.extend(endpoints(&start_all(&s)));
        }
        assert_eq!(
            started,
            [2, 2, 1, 1],
            "endpoint 2 first, until both have their share"
        );
        assert_eq!((running(&s, 1), running(&s, 2)), (2, 2));
    }

    #[test]
    fn when_an_endpoint_runs_out_of_work_the_others_share_grows() {
        let s = shared(4, 4);
        submit(&s, jobs(1, 1));
        submit(&s, jobs(2, 10));
        let started = start_all(&s);
        assert_eq!(endpoints(&started), [1, 2, 2], "a share of two each");
        assert_eq!(running(&s, 2), 2);
        // Endpoint 1's only job ends: it has no work left, and no longer counts.
        finish(&s, started[0], Outcome::default());
        assert_eq!(s.lock().share(&s), 4);
        assert_eq!(endpoints(&start_all(&s)), [2, 2]);
        assert_eq!(running(&s, 2), 4);
        let done = std::mem::take(&mut s.lock().done);
        assert!(matches!(done[..], [Done::Attempted(t, _)] if t.delivery_id == 101));
    }

    #[test]
    fn a_job_too_late_to_start_is_released() {
        let s = shared(4, 4);
        let mut late = job(1, 101, "http://127.0.0.1:9/");
        late.start_by = Instant::now() - Duration::from_millis(1);
        submit(&s, vec![late]);
        submit(&s, jobs(2, 1));
        assert_eq!(endpoints(&start_all(&s)), [2]);
        let state = s.lock();
        assert!(matches!(state.done[..], [Done::Released(t)] if t.delivery_id == 101));
        assert!(
            !state.queues.contains_key(&1),
            "endpoint 1 has no work left"
        );
    }

    /// Everything `take_done` returns until `n` jobs are done (10 s at most).
    fn wait_done(d: &Dispatcher, n: usize) -> Vec<Done> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = Vec::new();
        while done.len() < n {
            assert!(Instant::now() < deadline, "{} of {n} jobs done", done.len());
            std::thread::sleep(Duration::from_millis(10));
            done.extend(d.take_done());
        }
        done
    }

    #[test]
    fn the_delivery_thread_sends_every_job_and_reports_it() {
        let server = serve(|_| Some(response(200, &[], b"ok")));
        let url = server.url("/hook");
        let waker = Waker::new().expect("eventfd");
        let d = Dispatcher::new(client(), 2, 1, 1, waker).expect("dispatcher");
        d.submit(
            (1..=3)
                .flat_map(|i| [job(1, 100 + i, &url), job(2, 200 + i, &url)])
                .collect(),
        );
        let mut sent: Vec<i64> = wait_done(&d, 6)
            .into_iter()
            .map(|done| match done {
                Done::Attempted(t, outcome) => {
                    assert_eq!((outcome.status, outcome.error), (Some(200), None));
                    t.delivery_id
                }
                Done::Released(t) => panic!("delivery {} released", t.delivery_id),
            })
            .collect();
        sent.sort_unstable();
        assert_eq!(sent, [101, 102, 103, 201, 202, 203]);
        assert_eq!(server.received().len(), 6);
        assert!(d.idle());
        assert_eq!(d.outstanding(), (0, HashMap::new()));
    }

    #[test]
    fn release_gives_back_queued_jobs_and_leaves_running_ones() {
        // A receiver that never answers: the first job keeps the only slot.
        let server = serve(|_| None);
        let url = server.url("/hook");
        let d =
            Dispatcher::new(client(), 1, 1, 1, Waker::new().expect("eventfd")).expect("dispatcher");
        d.submit((1..=3).map(|i| job(1, 100 + i, &url)).collect());
        server.next_request();
        d.release(|_| true);
        let released: Vec<i64> = d
            .take_done()
            .into_iter()
            .map(|done| match done {
                Done::Released(t) => t.delivery_id,
                Done::Attempted(t, _) => panic!("delivery {} attempted", t.delivery_id),
            })
            .collect();
        assert_eq!(released, [102, 103]);
        assert_eq!(d.outstanding(), (1, HashMap::from([(1, 1)])));
        assert!(!d.idle(), "the running request is not given back");
        assert!(!d.has_expired());
    }
}
