//! The bulk worker: runs the jobs of the bulk methods (`users.bulkSetPreferences`,
//! `users.bulkIdentify`, `users.bulkDelete`, `objects.bulkSet`, `objects.bulkDelete`,
//! `tenants.bulkSet`, `tenants.bulkDelete`: [`Kind`]) from the job table, a chunk at a time,
//! until none is left; then sleeps until woken. Each item is applied by the same write step
//! as the single method (`writes`); an item that fails is an error item, not a failed job.
//!
//! Each chunk's writes and the job's counters commit in one transaction, and the chunk's
//! offset is read inside that transaction, so a crash at any moment resumes exactly where
//! the last commit left off: no user is written twice or skipped, and the counters stay
//! exact. Jobs left `queued` or `processing` by a previous run continue at start-up.
//! In a fleet, a daemon whose worker is idle holds the job it queues for a moment
//! ([`SUBMIT_GRACE`]), so that it runs the job itself: its followers then hear of the
//! job's end at once, not after a NOTIFY hop through the daemon that would have claimed
//! it (about 7 ms of a 37 ms 1000-user job in `cargo bench --bench fleet -- --quick
//! --bulk`, where the other daemon often won; with the hold the submitter ran every timed
//! job, and the job/raw-upsert ratio went from 2.75–2.83× to 2.17–2.66×, medians of 9
//! rounds). Finished jobs past their retention are purged once the open jobs are done,
//! so a job never waits for the purge, nor starts with a tenth of a chunk because the
//! purge counted as someone else's call.
//! Between chunks the writer thread serves interactive writes (its queue is FIFO), and the
//! worker checks for cancellation, so shutdown never waits for a whole job.
//!
//! The worker gives way while the daemon is serving other calls (`Sharing`): its chunks
//! shrink to a tenth of `jobs.chunk_size` and it pauses after each for three times as long
//! as the chunk took, so it uses at most a quarter of the writer's time. Writing holds a
//! CPU, much of it in the kernel writing the WAL, where a read scheduled behind it waits;
//! what counts is how much is written per second, not whether it is synced (measured with
//! `cargo bench --bench jobs`, see the README's performance section). On an idle daemon the
//! worker writes full chunks without pausing and finishes a job soonest.
//!
//! Why it gives way rather than anything else (`perf sched timehist` during `cargo bench
//! --bench jobs`): reads were runnable but waited 1–4 ms for the CPU the writer held while
//! it wrote the WAL in the kernel, which does not preempt there (PREEMPT_NONE, 250 Hz).
//! Renicing the writer, `durability = "normal"` and even no checkpoints at all measured the
//! same; what helped is writing less per second while reads flow: smaller chunks (reads'
//! p99 during jobs 2.5–5× → about 2× of without), pauses between them (open loop 4–5× →
//! 2.5×), and short scheduler slices for the serving threads (`sched`). A pause of five
//! chunk times instead of three measured no better.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::{ConfigHandle, Limits};
use crate::model::change::{Actor, Origin};
use crate::model::{PreferenceSet, RecipientKey, SetKind};
use crate::store::{ChunkOutcome, Claimed, Db, ErrorItem, JobRow};
use crate::writes::{RecipientItem, TenantItem};

/// The name of a bulk set's operation, as Knock names it.
pub const SET_PREFERENCES: &str = "users.set_preferences";

/// What a `users.bulkSetPreferences` job does: replace `preference_set` with `preferences`
/// for every user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub user_ids: Vec<String>,
    pub preference_set: String,
    pub preferences: serde_json::Value,
}

/// The kinds of job: the bulk method that queued one, whose name is stored with it (so an
/// idempotency key compares the method as well as the params).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SetPreferences,
    IdentifyUsers,
    DeleteUsers,
    SetObjects,
    DeleteObjects,
    SetTenants,
    DeleteTenants,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::SetPreferences,
        Kind::IdentifyUsers,
        Kind::DeleteUsers,
        Kind::SetObjects,
        Kind::DeleteObjects,
        Kind::SetTenants,
        Kind::DeleteTenants,
    ];

    /// The JSON-RPC method that queues this kind.
    pub fn method(self) -> &'static str {
        match self {
            Kind::SetPreferences => "users.bulkSetPreferences",
            Kind::IdentifyUsers => "users.bulkIdentify",
            Kind::DeleteUsers => "users.bulkDelete",
            Kind::SetObjects => "objects.bulkSet",
            Kind::DeleteObjects => "objects.bulkDelete",
            Kind::SetTenants => "tenants.bulkSet",
            Kind::DeleteTenants => "tenants.bulkDelete",
        }
    }

    pub fn parse(method: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.method() == method)
    }
}

/// The payload of `users.bulkIdentify` and `objects.bulkSet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub items: Vec<RecipientItem>,
}

/// The payload of `users.bulkDelete`, `objects.bulkDelete` and `tenants.bulkDelete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletePayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub ids: Vec<String>,
}

/// The payload of `tenants.bulkSet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsPayload {
    pub items: Vec<TenantItem>,
}

/// What a job does, validated: built by `api` from a bulk method's params (and by
/// `prefsd import`), stored as its kind and payload, read back by the worker.
#[derive(Clone, Debug)]
pub enum Work {
    /// `users.bulkSetPreferences`, with its set parsed once.
    SetPreferences(Payload, PreferenceSet),
    /// `users.bulkIdentify` (no collection) and `objects.bulkSet`.
    Identify(IdentifyPayload),
    /// `users.bulkDelete` (no collection) and `objects.bulkDelete`.
    DeleteRecipients(DeletePayload),
    SetTenants(TenantsPayload),
    DeleteTenants(DeletePayload),
}

impl Work {
    pub fn kind(&self) -> Kind {
        match self {
            Work::SetPreferences(..) => Kind::SetPreferences,
            Work::Identify(p) if p.collection.is_none() => Kind::IdentifyUsers,
            Work::Identify(_) => Kind::SetObjects,
            Work::DeleteRecipients(p) if p.collection.is_none() => Kind::DeleteUsers,
            Work::DeleteRecipients(_) => Kind::DeleteObjects,
            Work::SetTenants(_) => Kind::SetTenants,
            Work::DeleteTenants(_) => Kind::DeleteTenants,
        }
    }

    /// The `BulkOperation`'s `name` (rest.md §4.2, A14).
    pub fn name(&self) -> String {
        match self {
            Work::SetPreferences(..) => SET_PREFERENCES.to_string(),
            Work::Identify(IdentifyPayload {
                collection: None, ..
            }) => "users.identify".to_string(),
            Work::Identify(IdentifyPayload {
                collection: Some(c),
                ..
            }) => format!("objects.{c}.set"),
            Work::DeleteRecipients(DeletePayload {
                collection: None, ..
            }) => "users.delete".to_string(),
            Work::DeleteRecipients(DeletePayload {
                collection: Some(c),
                ..
            }) => format!("objects.{c}.delete"),
            Work::SetTenants(_) => "tenants.set".to_string(),
            Work::DeleteTenants(_) => "tenants.delete".to_string(),
        }
    }

    /// How many items the job has.
    pub fn len(&self) -> usize {
        match self {
            Work::SetPreferences(p, _) => p.user_ids.len(),
            Work::Identify(p) => p.items.len(),
            Work::DeleteRecipients(p) | Work::DeleteTenants(p) => p.ids.len(),
            Work::SetTenants(p) => p.items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as stored: the same params give the same text.
    pub fn payload(&self) -> Result<String, serde_json::Error> {
        match self {
            Work::SetPreferences(p, _) => serde_json::to_string(p),
            Work::Identify(p) => serde_json::to_string(p),
            Work::DeleteRecipients(p) | Work::DeleteTenants(p) => serde_json::to_string(p),
            Work::SetTenants(p) => serde_json::to_string(p),
        }
    }

    /// Reads a stored job back.
    pub fn parse(job: &JobRow) -> Result<Work, String> {
        let kind =
            Kind::parse(&job.kind).ok_or_else(|| format!("unknown job kind {:?}", job.kind))?;
        let text = job.payload.as_str();
        let bad = |e: serde_json::Error| format!("payload: {e}");
        Ok(match kind {
            Kind::SetPreferences => {
                let payload: Payload = serde_json::from_str(text).map_err(bad)?;
                let set =
                    PreferenceSet::parse(&payload.preferences, SetKind::Recipient, "preferences")
                        .map_err(|e| e.to_string())?;
                Work::SetPreferences(payload, set)
            }
            Kind::IdentifyUsers | Kind::SetObjects => {
                Work::Identify(serde_json::from_str(text).map_err(bad)?)
            }
            Kind::DeleteUsers | Kind::DeleteObjects => {
                Work::DeleteRecipients(serde_json::from_str(text).map_err(bad)?)
            }
            Kind::SetTenants => Work::SetTenants(serde_json::from_str(text).map_err(bad)?),
            Kind::DeleteTenants => Work::DeleteTenants(serde_json::from_str(text).map_err(bad)?),
        })
    }

    /// Applies item `i` inside the chunk's transaction, as the single method would. An
    /// error the item caused (it does not validate, or grows past a limit) is its error
    /// item, and nothing of it is written; a store failure fails the chunk.
    fn apply(
        &self,
        w: &crate::store::Write<'_>,
        i: usize,
        limits: &Limits,
        now: &str,
    ) -> Result<Option<ErrorItem>, Error> {
        let (id, collection, result) = match self {
            Work::SetPreferences(p, set) => {
                let user = &p.user_ids[i];
                let key = RecipientKey::user(user);
                w.put_set(&key, &p.preference_set, set, now)?;
                return Ok(None);
            }
            Work::Identify(p) => {
                let item = &p.items[i];
                let prefix = match &p.collection {
                    None => format!("users.{i}"),
                    Some(_) => format!("objects.{i}"),
                };
                let result = item.apply(w, p.collection.as_deref(), limits, &prefix, now);
                (&item.id, &p.collection, result)
            }
            Work::DeleteRecipients(p) => {
                let id = &p.ids[i];
                let key = RecipientKey {
                    collection: p.collection.clone(),
                    id: id.clone(),
                };
                // Deleting what is absent counts as a success (rest.md §4.2).
                w.delete_recipient(&key)?;
                return Ok(None);
            }
            Work::SetTenants(p) => {
                let item = &p.items[i];
                let prefix = format!("tenants.{i}.");
                let result = item
                    .to_write(&prefix)
                    .map_err(Error::from)
                    .and_then(|write| write.apply(w, limits, &prefix, now).map(|_| ()));
                (&item.id, &None, result)
            }
            Work::DeleteTenants(p) => {
                w.delete_tenant(&p.ids[i])?;
                return Ok(None);
            }
        };
        match result {
            Ok(()) => Ok(None),
            Err(e @ (Error::Store(_) | Error::Internal(_))) => Err(e),
            Err(e) => Ok(Some(ErrorItem {
                id: id.clone(),
                collection: collection.clone(),
                message: e.to_string(),
            })),
        }
    }
}

/// How the rest of the daemon talks to the worker: wake it, and hear about progress.
#[derive(Clone)]
pub struct Jobs {
    wake: Arc<Notify>,
    updates: broadcast::Sender<Arc<JobRow>>,
    hold: Arc<Hold>,
    /// The job this daemon's worker is running, whose progress it publishes itself.
    running: Arc<std::sync::Mutex<Option<String>>>,
    /// Whether the worker is waiting for work (it runs, and no job is open for it).
    idle: Arc<std::sync::atomic::AtomicBool>,
}

/// A hold on the worker, for tests that must catch a job between two chunks without
/// relying on how slow the disk is: while held, the worker runs a chunk only for a permit
/// ([`Jobs::hold`], [`Jobs::release_chunks`]). Never held in a daemon that serves.
struct Hold {
    held: std::sync::atomic::AtomicBool,
    permits: tokio::sync::Semaphore,
}

impl Default for Jobs {
    fn default() -> Jobs {
        Jobs::new()
    }
}

impl Jobs {
    pub fn new() -> Jobs {
        let (updates, _) = broadcast::channel(1024);
        Jobs {
            wake: Arc::new(Notify::new()),
            updates,
            hold: Arc::new(Hold {
                held: std::sync::atomic::AtomicBool::new(false),
                permits: tokio::sync::Semaphore::new(0),
            }),
            running: Arc::default(),
            idle: Arc::default(),
        }
    }

    /// Whether this daemon's worker is waiting for work: a job queued now is the next it
    /// runs. False while it runs a job, and where no worker runs.
    pub fn is_idle(&self) -> bool {
        self.idle.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_running(&self, id: Option<&str>) {
        if let Ok(mut running) = self.running.lock() {
            *running = id.map(str::to_string);
        }
    }

    fn is_running(&self, id: &str) -> bool {
        self.running
            .lock()
            .is_ok_and(|running| running.as_deref() == Some(id))
    }

    /// From now on the worker runs a chunk only when [`Jobs::release_chunks`] allows it:
    /// a test's way to stop a job at a known chunk.
    pub fn hold(&self) {
        self.hold
            .held
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets a held worker run `n` more chunks.
    pub fn release_chunks(&self, n: usize) {
        self.hold.permits.add_permits(n);
    }

    /// Waits for a chunk permit while held; false when cancelled first.
    async fn chunk_permit(&self, cancel: &CancellationToken) -> bool {
        if !self.hold.held.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        tokio::select! {
            permit = self.hold.permits.acquire() => {
                permit.map(tokio::sync::SemaphorePermit::forget).is_ok()
            }
            () = cancel.cancelled() => false,
        }
    }

    /// Tells the worker a job is waiting. A wake with nobody waiting is kept, so a job
    /// submitted while the worker is busy is never missed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every job state the worker commits, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobRow>> {
        self.updates.subscribe()
    }

    fn publish(&self, job: JobRow) {
        // No subscribers is fine: nobody is following.
        let _ = self.updates.send(Arc::new(job));
    }
}

/// Fleet mode: how long a daemon whose worker is idle holds a job it queues (at most
/// `jobs.lease_s`). Its worker, woken at once, claims the job within milliseconds; the
/// other daemons leave the job alone meanwhile, and take it over as from a killed runner
/// if the daemon dies first. Long enough for a loaded machine to schedule the worker,
/// short next to the lease: a dead daemon's fresh job waits at most this long.
pub const SUBMIT_GRACE: Duration = Duration::from_secs(2);

/// How long the worker waits for another job before the writer's page cache gets its
/// usual size back.
const CACHE_BACK_AFTER: Duration = Duration::from_secs(10);

/// Runs jobs until `cancel` fires. The job settings (retention, chunk size) are read from
/// the live config for each job; the rows written are counted in `metrics`.
pub async fn run(
    db: Db,
    jobs: Jobs,
    config: ConfigHandle,
    metrics: Arc<crate::metrics::Metrics>,
    cancel: CancellationToken,
) {
    tokio::join!(
        work(db.clone(), jobs.clone(), config, metrics, cancel.clone()),
        forward_progress(db, jobs, cancel),
    );
}

/// Fleet mode: publishes to this daemon's `bulkOperations.subscribe` subscribers the
/// progress of jobs other daemons run (their chunks notify every daemon), by re-reading
/// the job. Ends when `cancel` fires; on SQLite no notice ever comes.
async fn forward_progress(db: Db, jobs: Jobs, cancel: CancellationToken) {
    let mut notices = db.job_notices();
    loop {
        let notice = tokio::select! {
            () = cancel.cancelled() => return,
            notice = notices.recv() => notice,
        };
        // A lagging receiver has missed notices: nothing to re-read by id, the next
        // ones carry the news.
        let Ok(Some(id)) = notice else {
            if matches!(
                notice,
                Err(tokio::sync::broadcast::error::RecvError::Closed)
            ) {
                return;
            }
            continue;
        };
        // Nobody to tell, or this daemon runs the job and tells them itself (a read here
        // would also make the worker think the daemon busy, and slow it down).
        if jobs.updates.receiver_count() == 0 || jobs.is_running(&id) {
            continue;
        }
        match db.read(move |r| r.job(&id)).await {
            Ok(Some(job)) => jobs.publish(job),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot re-read a job another daemon moved on"),
        }
    }
}

/// The worker itself: runs the runnable jobs one at a time, then waits for a wake (a job
/// submitted here, or a notice from another daemon of a fleet), or for the first lease of
/// another daemon's job to run out.
async fn work(
    db: Db,
    jobs: Jobs,
    config: ConfigHandle,
    metrics: Arc<crate::metrics::Metrics>,
    cancel: CancellationToken,
) {
    let mut notices = db.job_notices();
    let mut sharing = Sharing::new(
        config.current().settings.jobs.chunk_size as usize,
        db.calls(),
    );
    // Whether chunks have shrunk the writer's page cache since it was last restored.
    let mut shrunk = false;
    // Whether to purge once the open jobs are done: not when another daemon's notice woke
    // the worker. In a fleet every chunk of every job notifies every daemon, and a purge is
    // a write, which takes the fleet's write lock: each daemon purging on each notice
    // queued behind the running job and delayed its next chunk. The purge comes after the
    // jobs, not before: a job submitted to an idle worker starts without waiting for it.
    let mut purge_due = true;
    loop {
        // Finished jobs expire by age: look again in an hour even if nothing wakes us;
        // sooner when another daemon's lease on an open job runs out.
        let mut wait = Duration::from_secs(3600);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            sharing.configured = config.current().settings.jobs.chunk_size as usize;
            match run_next(&db, &jobs, &config, &mut sharing, &metrics, &cancel).await {
                Ok(Next::Ran) => {
                    shrunk = true;
                    continue;
                }
                Ok(Next::Idle) => break,
                Ok(Next::LeasedFor(until)) => {
                    // A little past the lease's end, so the claim then succeeds.
                    wait = until + Duration::from_millis(50);
                    break;
                }
                Err(e) if is_unavailable(&e) => {
                    // Try again shortly; the store reconnects by itself.
                    wait = UNAVAILABLE_RETRY;
                    break;
                }
                Err(e) => {
                    // A store failure (a full disk, say) has already failed the job where
                    // possible; wait for the next wake rather than spin on it.
                    tracing::error!(error = format!("{e:#}"), "bulk worker error");
                    break;
                }
            }
        }
        if purge_due {
            purge(&db, config.current().settings.jobs.retention_days).await;
            // The purge is the worker's own call, not someone else's.
            sharing.observe(db.calls());
        }
        // The writer's page cache gets its usual size back once no job came for a while: an
        // import queues its jobs one after the other, and growing the cache between two of
        // them only left more pages resident.
        if shrunk {
            wait = wait.min(CACHE_BACK_AFTER);
        }
        jobs.idle.store(true, std::sync::atomic::Ordering::SeqCst);
        let woken = tokio::select! {
            () = jobs.wake.notified() => Woken::Here,
            // Closed or lagged: look again either way.
            _ = notices.recv() => Woken::Notice,
            () = cancel.cancelled() => {
                jobs.idle.store(false, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            () = tokio::time::sleep(wait) => Woken::Timer,
        };
        jobs.idle.store(false, std::sync::atomic::Ordering::SeqCst);
        purge_due = woken != Woken::Notice;
        if shrunk && woken == Woken::Timer {
            shrunk = false;
            if let Err(e) = db.write(|w| w.bulk_page_cache(false)).await {
                tracing::warn!(error = %e, "could not restore the writer's page cache");
            }
            sharing.observe(db.calls());
        }
    }
}

/// What woke the idle worker.
#[derive(PartialEq)]
enum Woken {
    /// A job queued on this daemon ([`Jobs::wake`]).
    Here,
    /// Another daemon of a fleet queued a job or moved one on.
    Notice,
    /// Its wait ran out: a lease elsewhere ended, or it is time to purge.
    Timer,
}

/// How the worker shares the database with interactive calls: the size of its next chunk
/// and the pause after it. Full chunks and no pause while nobody else uses the database;
/// a tenth of `jobs.chunk_size` (at least 1) and a pause of [`PAUSE_FACTOR`] times the
/// chunk's duration while others do.
struct Sharing {
    configured: usize,
    /// [`Db::calls`] after the worker's own last call.
    mark: u64,
    shared: bool,
}

/// While others call, the worker pauses this many times as long as each chunk took: it
/// then has at most a quarter of the writer's time.
const PAUSE_FACTOR: u32 = 3;

/// Other calls between two of the worker's own that do not count as others using the
/// database: the call that queued a job and its follower's first read of it (or a poller's
/// read now and then). Counting them, every job submitted and followed began with a tenth
/// of a chunk and a pause three times as long (about 15 ms of a 50 ms job on PostgreSQL).
const IDLE_OTHERS: u64 = 2;

/// The longest pause, so that a chunk slowed by the disk does not stall its job for long.
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl Sharing {
    fn new(configured: usize, calls: u64) -> Sharing {
        Sharing {
            configured,
            mark: calls,
            shared: false,
        }
    }

    fn chunk(&self) -> usize {
        if self.shared {
            (self.configured / 10).max(1)
        } else {
            self.configured.max(1)
        }
    }

    /// The pause after a chunk that took `took`.
    fn pause(&self, took: Duration) -> Duration {
        if self.shared {
            (took * PAUSE_FACTOR).min(MAX_PAUSE)
        } else {
            Duration::ZERO
        }
    }

    /// Called with [`Db::calls`] after each of the worker's own database calls: more than
    /// [`IDLE_OTHERS`] other calls since the last one mean the daemon is serving someone.
    fn observe(&mut self, calls: u64) {
        // The worker's own call is one of them.
        self.shared = calls.saturating_sub(self.mark) > 1 + IDLE_OTHERS;
        self.mark = calls;
    }
}

/// How soon the worker looks again when the store could not be reached.
const UNAVAILABLE_RETRY: Duration = Duration::from_millis(500);

/// Whether `e` says the store cannot be reached now (fleet mode: PostgreSQL is away), as
/// opposed to a failure of the job itself.
fn is_unavailable(e: &Error) -> bool {
    matches!(e, Error::Store(store) if store.is_unavailable())
}

/// What [`run_next`] found.
enum Next {
    /// A job, run to its end or until cancelled or taken over.
    Ran,
    /// No open job.
    Idle,
    /// Open jobs, all leased by other daemons of a fleet, the first for this long.
    LeasedFor(Duration),
}

/// Runs the oldest runnable job to its end (or until cancelled).
async fn run_next(
    db: &Db,
    jobs: &Jobs,
    config: &ConfigHandle,
    sharing: &mut Sharing,
    metrics: &crate::metrics::Metrics,
    cancel: &CancellationToken,
) -> Result<Next, Error> {
    let me = db.node().to_string();
    let next = db
        .read(move |r| Ok::<_, Error>(r.next_runnable_job(&me)?))
        .await;
    sharing.observe(db.calls());
    let job = match next? {
        crate::store::NextJob::Run(job) => *job,
        crate::store::NextJob::LeasedElsewhere(until) => return Ok(Next::LeasedFor(until)),
        crate::store::NextJob::None => return Ok(Next::Idle),
    };
    let work = match Work::parse(&job) {
        Ok(work) => work,
        Err(message) => {
            tracing::error!(
                job = job.id,
                message,
                "bulk job has an unreadable payload; failing it"
            );
            fail(db, jobs, &job.id, message).await?;
            return Ok(Next::Ran);
        }
    };
    let work = Arc::new(work);
    jobs.set_running(Some(&job.id));
    let result = run_job(db, jobs, config, sharing, metrics, cancel, &job, work).await;
    jobs.set_running(None);
    result
}

/// Runs chunks of `job` until it ends, is cancelled or is taken over.
#[allow(clippy::too_many_arguments)]
async fn run_job(
    db: &Db,
    jobs: &Jobs,
    config: &ConfigHandle,
    sharing: &mut Sharing,
    metrics: &crate::metrics::Metrics,
    cancel: &CancellationToken,
    job: &JobRow,
    work: Arc<Work>,
) -> Result<Next, Error> {
    // The job's counts so far: each chunk's rows are the difference.
    let mut counted = (job.success_count, job.error_count);
    tracing::info!(
        job = job.id,
        kind = work.kind().method(),
        items = work.len(),
        "bulk job running"
    );
    loop {
        if cancel.is_cancelled() || !jobs.chunk_permit(cancel).await {
            return Ok(Next::Ran);
        }
        let id = job.id.clone();
        let work = Arc::clone(&work);
        let chunk = sharing.chunk();
        let limits = config.current().settings.limits.clone();
        let claim = Claim {
            me: db.node().to_string(),
            lease_s: config.current().settings.jobs.lease_s,
        };
        let started = std::time::Instant::now();
        // The job's changes name it as their actor, and the method that queued it.
        let origin = Origin::new(
            Actor::BulkOperation { id: id.clone() },
            work.kind().method(),
        );
        let result = db
            .write_as(origin, move |w| {
                run_chunk(w, &id, &work, &limits, chunk, &claim)
            })
            .await;
        sharing.observe(db.calls());
        if sharing.shared {
            // The WAL the chunk wrote is copied back by the checkpointer, off the writer;
            // that is part of the chunk's cost, so the pause counts it.
            let db = db.clone();
            let _ = tokio::task::spawn_blocking(move || db.wait_for_checkpoints()).await;
        }
        let took = started.elapsed();
        let state = match result {
            Ok(state) => state,
            Err(e) if is_unavailable(&e) => {
                // PostgreSQL is away (fleet mode): the chunk rolled back whole; the job
                // goes on from its committed offset once the store is back.
                tracing::warn!(job = job.id, error = %e, "bulk job paused: the store cannot be reached");
                return Err(e);
            }
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "bulk job failed");
                // Failing it may fail too (a full disk); the chunk's error is the one to report.
                let reason = "the job could not be written; see the daemon log";
                let _ = fail(db, jobs, &job.id, reason.to_string()).await;
                return Err(e);
            }
        };
        // Gone, or taken over by another daemon of a fleet.
        let Some(state) = state else {
            return Ok(Next::Ran);
        };
        let rows = |now: i64, before: i64| u64::try_from(now - before).unwrap_or(0);
        metrics.record_job_rows(
            rows(state.success_count, counted.0),
            rows(state.error_count, counted.1),
        );
        counted = (state.success_count, state.error_count);
        let done = state.status.is_terminal();
        jobs.publish(state);
        if done {
            tracing::info!(job = job.id, "bulk job completed");
            return Ok(Next::Ran);
        }
        // Let queued interactive work run between chunks, and give way to it for a while
        // when there is some.
        let pause = sharing.pause(took);
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return Ok(Next::Ran),
            }
        }
    }
}

/// Marks a job failed with `message` and tells its followers.
async fn fail(db: &Db, jobs: &Jobs, id: &str, message: String) -> Result<(), Error> {
    let id = id.to_string();
    let failed = db
        .write(move |w| {
            w.fail_job(&id, &message, &crate::store::time::now())?;
            Ok::<_, Error>(w.job(&id)?)
        })
        .await?;
    if let Some(failed) = failed {
        jobs.publish(failed);
    }
    Ok(())
}

/// Who runs a chunk: this daemon, and how long its claim on the job lasts (fleet mode).
pub struct Claim {
    pub me: String,
    pub lease_s: u32,
}

/// One chunk, inside the writer's transaction: read where the job stands, claim it, apply
/// the next items, advance the counters. Returns the job's new state (`None` if it
/// vanished, or another daemon of a fleet holds it). The offset is read in the transaction
/// that writes the chunk and advances it, so no item is applied twice or skipped, whoever
/// runs the chunk.
pub fn run_chunk(
    w: &crate::store::Write<'_>,
    id: &str,
    work: &Work,
    limits: &Limits,
    chunk: usize,
    claim: &Claim,
) -> Result<Option<JobRow>, Error> {
    let job = match w.claim_job(id, &claim.me, claim.lease_s)? {
        Claimed::Job(job) => *job,
        Claimed::Ended(job) => return Ok(Some(*job)),
        Claimed::No => return Ok(None),
    };
    // Until the queue is empty, the writer's page cache is the bulk size (`run` restores it).
    w.bulk_page_cache(true)?;
    let now = crate::store::time::now();
    let start = usize::try_from(job.processed_rows)
        .unwrap_or(0)
        .min(work.len());
    let end = (start + chunk.max(1)).min(work.len());
    let mut outcome = ChunkOutcome::default();
    if let Work::SetPreferences(p, set) = work {
        // One set for every user: written in one go (a few statements per chunk on
        // PostgreSQL), with the same outcome as item by item — none of them can fail.
        let keys: Vec<RecipientKey> = p.user_ids[start..end]
            .iter()
            .map(RecipientKey::user)
            .collect();
        w.put_sets(&keys, &p.preference_set, set, &now)?;
        let n = i64::try_from(end - start).unwrap_or(i64::MAX);
        outcome.succeeded = n;
        outcome.processed = n;
        return Ok(w.advance_job(id, &outcome, &now)?);
    }
    for i in start..end {
        match work.apply(w, i, limits, &now)? {
            None => outcome.succeeded += 1,
            Some(item) => outcome.errors.push(item),
        }
        outcome.processed += 1;
    }
    Ok(w.advance_job(id, &outcome, &now)?)
}

/// Deletes finished jobs older than `retention_days`.
async fn purge(db: &Db, retention_days: u32) {
    let cutoff = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(
            24 * i64::from(retention_days),
        ))
        .map(crate::store::time::format_time);
    let Ok(cutoff) = cutoff else { return };
    match db
        .write(move |w| Ok::<_, Error>(w.purge_jobs(&cutoff)?))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deleted = n,
            "purged finished bulk operations past retention"
        ),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "could not purge old bulk operations"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Sharing;

    #[test]
    fn the_worker_gives_way_while_others_use_the_database_and_not_otherwise() {
        let ms = Duration::from_millis;
        let mut sharing = Sharing::new(250, 100);
        assert_eq!(sharing.chunk(), 250, "an idle daemon: full chunks");
        assert_eq!(sharing.pause(ms(4)), Duration::ZERO, "and no pause");
        // Only the worker's own call since the mark.
        sharing.observe(101);
        assert_eq!(sharing.chunk(), 250);
        // Its own call and two others: the submitter and a follower, say.
        sharing.observe(104);
        assert_eq!(sharing.chunk(), 250, "a job's own submit and follow");
        // Its own call and three others.
        sharing.observe(108);
        assert_eq!(sharing.chunk(), 25);
        assert_eq!(sharing.pause(ms(2)), ms(6));
        assert_eq!(
            sharing.pause(ms(900)),
            ms(1000),
            "a pause is at most a second"
        );
        sharing.observe(109);
        assert_eq!(
            sharing.chunk(),
            250,
            "the others stopped: full chunks again"
        );
        assert_eq!(sharing.pause(ms(4)), Duration::ZERO);
        sharing.configured = 5;
        sharing.observe(120);
        assert_eq!(sharing.chunk(), 1, "never below one user");
    }
}
