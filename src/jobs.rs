//! The bulk worker: runs `users.bulkSetPreferences` jobs from the job table, a chunk at a
//! time, until none is left; then sleeps until woken.
//!
//! Each chunk's writes and the job's counters commit in one transaction, and the chunk's
//! offset is read inside that transaction, so a crash at any moment resumes exactly where
//! the last commit left off: no user is written twice or skipped, and the counters stay
//! exact. Jobs left `queued` or `processing` by a previous run continue at start-up.
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
use crate::config::ConfigHandle;
use crate::model::{PreferenceSet, RecipientKey, SetKind};
use crate::store::{ChunkOutcome, Db, JobRow};

/// The name of the only job kind, as Knock names it.
pub const SET_PREFERENCES: &str = "users.set_preferences";

/// What a job does: replace `preference_set` with `preferences` for every user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub user_ids: Vec<String>,
    pub preference_set: String,
    pub preferences: serde_json::Value,
}

/// How the rest of the daemon talks to the worker: wake it, and hear about progress.
#[derive(Clone)]
pub struct Jobs {
    wake: Arc<Notify>,
    updates: broadcast::Sender<Arc<JobRow>>,
    hold: Arc<Hold>,
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
        }
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

/// Runs jobs until `cancel` fires. The job settings (retention, chunk size) are read from
/// the live config for each job; the rows written are counted in `metrics`.
pub async fn run(
    db: Db,
    jobs: Jobs,
    config: ConfigHandle,
    metrics: Arc<crate::metrics::Metrics>,
    cancel: CancellationToken,
) {
    let mut sharing = Sharing::new(
        config.current().settings.jobs.chunk_size as usize,
        db.calls(),
    );
    loop {
        purge(&db, config.current().settings.jobs.retention_days).await;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            sharing.configured = config.current().settings.jobs.chunk_size as usize;
            match run_next(&db, &jobs, &mut sharing, &metrics, &cancel).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    // A store failure (a full disk, say) has already failed the job where
                    // possible; wait for the next wake rather than spin on it.
                    tracing::error!(error = format!("{e:#}"), "bulk worker error");
                    break;
                }
            }
        }
        tokio::select! {
            () = jobs.wake.notified() => {}
            () = cancel.cancelled() => return,
            // Finished jobs expire by age: look again in an hour even if nothing wakes us.
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
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

    /// Called with [`Db::calls`] after each of the worker's own database calls: any other
    /// call since the last one means the daemon is serving someone.
    fn observe(&mut self, calls: u64) {
        self.shared = calls.saturating_sub(self.mark) > 1;
        self.mark = calls;
    }
}

/// Runs the oldest runnable job to its end (or until cancelled). Returns whether there was
/// one.
async fn run_next(
    db: &Db,
    jobs: &Jobs,
    sharing: &mut Sharing,
    metrics: &crate::metrics::Metrics,
    cancel: &CancellationToken,
) -> Result<bool, Error> {
    let next = db.read(|r| Ok::<_, Error>(r.next_runnable_job()?)).await;
    sharing.observe(db.calls());
    let Some(job) = next? else {
        return Ok(false);
    };
    let payload = match parse_payload(&job) {
        Ok(p) => p,
        Err(message) => {
            tracing::error!(
                job = job.id,
                message,
                "bulk job has an unreadable payload; failing it"
            );
            fail(db, jobs, &job.id, message).await?;
            return Ok(true);
        }
    };
    let payload = Arc::new(payload);
    // The job's counts so far: each chunk's rows are the difference.
    let mut counted = (job.success_count, job.error_count);
    tracing::info!(
        job = job.id,
        users = payload.0.user_ids.len(),
        "bulk job running"
    );
    loop {
        if cancel.is_cancelled() || !jobs.chunk_permit(cancel).await {
            return Ok(true);
        }
        let id = job.id.clone();
        let payload = Arc::clone(&payload);
        let chunk = sharing.chunk();
        let started = std::time::Instant::now();
        let result = db
            .write(move |w| run_chunk(w, &id, &payload.0, &payload.1, chunk))
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
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "bulk job failed");
                // Failing it may fail too (a full disk); the chunk's error is the one to report.
                let reason = "the job could not be written; see the daemon log";
                let _ = fail(db, jobs, &job.id, reason.to_string()).await;
                return Err(e);
            }
        };
        let Some(state) = state else { return Ok(true) };
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
            return Ok(true);
        }
        // Let queued interactive work run between chunks, and give way to it for a while
        // when there is some.
        let pause = sharing.pause(took);
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return Ok(true),
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

fn parse_payload(job: &JobRow) -> Result<(Payload, PreferenceSet), String> {
    let payload: Payload =
        serde_json::from_str(&job.payload).map_err(|e| format!("payload: {e}"))?;
    let set = PreferenceSet::parse(&payload.preferences, SetKind::Recipient, "preferences")
        .map_err(|e| e.to_string())?;
    Ok((payload, set))
}

/// One chunk, inside the writer's transaction: read where the job stands, write the next
/// users, advance the counters. Returns the job's new state (`None` if it vanished).
pub fn run_chunk(
    w: &crate::store::Write<'_>,
    id: &str,
    payload: &Payload,
    set: &PreferenceSet,
    chunk: usize,
) -> Result<Option<JobRow>, Error> {
    let Some(job) = w.job(id)? else {
        return Ok(None);
    };
    if job.status.is_terminal() {
        return Ok(Some(job));
    }
    let now = crate::store::time::now();
    let start = usize::try_from(job.processed_rows)
        .unwrap_or(0)
        .min(payload.user_ids.len());
    let end = (start + chunk.max(1)).min(payload.user_ids.len());
    let mut outcome = ChunkOutcome::default();
    for user in &payload.user_ids[start..end] {
        w.put_set(
            &RecipientKey::user(user),
            &payload.preference_set,
            set,
            &now,
        )?;
        outcome.processed += 1;
        outcome.succeeded += 1;
    }
    w.advance_job(id, &outcome, &now)?;
    Ok(w.job(id)?)
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
        // Its own call and two others.
        sharing.observe(104);
        assert_eq!(sharing.chunk(), 25);
        assert_eq!(sharing.pause(ms(2)), ms(6));
        assert_eq!(
            sharing.pause(ms(900)),
            ms(1000),
            "a pause is at most a second"
        );
        sharing.observe(105);
        assert_eq!(
            sharing.chunk(),
            250,
            "the others stopped: full chunks again"
        );
        assert_eq!(sharing.pause(ms(4)), Duration::ZERO);
        sharing.configured = 5;
        sharing.observe(110);
        assert_eq!(sharing.chunk(), 1, "never below one user");
    }
}
