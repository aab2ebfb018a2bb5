//! The bulk operations table: durable jobs with exact progress counters.

use serde::{Deserialize, Serialize};

use crate::store::sql::{Row, params};
use crate::store::{Error, Read, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Processing,
            JobStatus::Completed,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

/// One item a job could not process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorItem {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub collection: Option<String>,
    pub message: String,
}

/// A stored job: Knock's `BulkOperation` plus what resuming it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub name: String,
    /// The bulk method that queued it (`jobs::Kind`).
    pub kind: String,
    pub status: JobStatus,
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub estimated_total_rows: i64,
    pub processed_rows: i64,
    pub success_count: i64,
    pub error_count: i64,
    pub error_items: Vec<ErrorItem>,
    pub inserted_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub failed_at: Option<String>,
}

/// A new job.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub payload: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub total_rows: i64,
    /// Fleet mode: the daemon queuing the job (its node name) holds it for this long, so
    /// that it runs the job itself (see `api::bulk::queue`); `None` lets any daemon claim
    /// it at once. Ignored on SQLite, where one daemon has the file.
    pub held_by: Option<(&'a str, std::time::Duration)>,
}

/// What one committed chunk did.
#[derive(Clone, Debug, Default)]
pub struct ChunkOutcome {
    pub processed: i64,
    pub succeeded: i64,
    pub errors: Vec<ErrorItem>,
}

const COLUMNS: &str = "seq, id, name, status, payload, idempotency_key, estimated_total_rows, processed_rows, \
    success_count, error_count, error_items, inserted_at, updated_at, started_at, completed_at, failed_at, kind";

fn job_from_row(r: &mut Row) -> Result<(JobRow, String), Error> {
    let status: String = r.get(3)?;
    let error_items: String = r.get(10)?;
    Ok((
        JobRow {
            seq: r.get(0)?,
            id: r.get(1)?,
            name: r.get(2)?,
            // The CHECK constraint admits only the four statuses.
            status: JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
            payload: r.get(4)?,
            idempotency_key: r.get(5)?,
            estimated_total_rows: r.get(6)?,
            processed_rows: r.get(7)?,
            success_count: r.get(8)?,
            error_count: r.get(9)?,
            error_items: Vec::new(),
            inserted_at: r.get(11)?,
            updated_at: r.get(12)?,
            started_at: r.get(13)?,
            completed_at: r.get(14)?,
            failed_at: r.get(15)?,
            kind: r.get(16)?,
        },
        error_items,
    ))
}

fn finish(row: Option<(JobRow, String)>) -> Result<Option<JobRow>, Error> {
    row.map(|(mut job, items)| {
        job.error_items = serde_json::from_str(&items)?;
        Ok(job)
    })
    .transpose()
}

impl Read<'_> {
    pub fn job(&self, id: &str) -> Result<Option<JobRow>, Error> {
        finish(self.conn().opt(
            &format!("SELECT {COLUMNS} FROM bulk_operations WHERE id = ?1"),
            params![id],
            job_from_row,
        )?)
    }

    pub fn job_by_key(&self, key: &str) -> Result<Option<JobRow>, Error> {
        finish(self.conn().opt(
            &format!("SELECT {COLUMNS} FROM bulk_operations WHERE idempotency_key = ?1"),
            params![key],
            job_from_row,
        )?)
    }

    /// The oldest job that is queued or was processing when the daemon stopped, and that
    /// no other daemon of a fleet holds a lease on (`me` names this daemon); else, when
    /// open jobs are leased elsewhere, how long until the first lease runs out.
    pub fn next_runnable_job(&self, me: &str) -> Result<NextJob, Error> {
        let sql = self.conn().pick(
            "SELECT {COLUMNS} FROM bulk_operations
             WHERE status IN ('queued', 'processing') AND (?1 = ?1) ORDER BY seq LIMIT 1",
            "SELECT {COLUMNS} FROM bulk_operations
             WHERE status IN ('queued', 'processing')
               AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until < clock_timestamp())
             ORDER BY seq LIMIT 1",
        );
        let found = finish(self.conn().opt(
            &sql.replace("{COLUMNS}", COLUMNS),
            params![me],
            job_from_row,
        )?)?;
        if let Some(job) = found {
            return Ok(NextJob::Run(Box::new(job)));
        }
        if self.conn().dialect() == crate::store::sql::Dialect::Sqlite {
            return Ok(NextJob::None);
        }
        let wait_ms: Option<Option<i64>> = self.conn().value(
            "SELECT CAST(ceil(extract(epoch FROM (min(lease_until) - clock_timestamp())) * 1000) AS bigint)
             FROM bulk_operations WHERE status IN ('queued', 'processing')",
            params![],
        )?;
        Ok(match wait_ms.flatten() {
            Some(ms) => NextJob::LeasedElsewhere(std::time::Duration::from_millis(
                u64::try_from(ms).unwrap_or(0),
            )),
            None => NextJob::None,
        })
    }

    /// Jobs newest first, `limit` of them, older than the cursor `before_seq`.
    pub fn jobs(
        &self,
        status: Option<JobStatus>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<Vec<JobRow>, Error> {
        let rows = self.conn().all(
            &format!(
                "SELECT {COLUMNS} FROM bulk_operations
                 WHERE (CAST(?1 AS text) IS NULL OR status = ?1)
                   AND (CAST(?2 AS bigint) IS NULL OR seq < ?2)
                 ORDER BY seq DESC LIMIT ?3"
            ),
            params![status.map(JobStatus::as_str), before_seq, limit],
            job_from_row,
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(job) = finish(Some(row))? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Counts of jobs queued and processing, for `daemon.status`.
    pub fn job_counts(&self) -> Result<(i64, i64), Error> {
        self.conn().one(
            "SELECT (SELECT count(*) FROM bulk_operations WHERE status = 'queued'),
                    (SELECT count(*) FROM bulk_operations WHERE status = 'processing')",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

/// What claiming a job for a chunk found ([`Write::claim_job`]).
#[derive(Debug)]
pub enum Claimed {
    /// The open job, this daemon's until its lease runs out.
    Job(Box<JobRow>),
    /// The job has ended: no chunk to run.
    Ended(Box<JobRow>),
    /// The job is gone, or another daemon of a fleet holds it.
    No,
}

/// What the bulk worker should do next ([`Read::next_runnable_job`]).
#[derive(Debug)]
pub enum NextJob {
    Run(Box<JobRow>),
    /// Every open job is leased by another daemon; the first lease runs out after this.
    LeasedElsewhere(std::time::Duration),
    None,
}

/// The writer's page cache while bulk jobs run, in KiB. At its usual 32 MiB, a job's
/// writes (and the payload each queued job stores) filled the whole cache, and the daemon's
/// RSS during an import stayed above 80 MiB. With 8 MiB its peak on 300 000 lines of the
/// 1 M-user export was 66.8 MiB, with 4 MiB 62.6 MiB (ops.md: 64 MiB; README, "Backups
/// and moving data"); SQLite reads what the cache lacks from the OS page cache.
const BULK_PAGE_CACHE_KIB: u32 = 4 * 1024;

impl Write<'_> {
    /// Sizes the writer's page cache for bulk jobs (`true`: [`BULK_PAGE_CACHE_KIB`],
    /// freeing pages past it at once) or back to its usual size once none is left.
    pub fn bulk_page_cache(&self, bulk: bool) -> Result<(), Error> {
        let kib = match bulk {
            true => BULK_PAGE_CACHE_KIB,
            false => super::WRITER_PAGE_CACHE_KIB,
        };
        // PostgreSQL's server keeps its own buffers; nothing to size here.
        if self.conn().dialect() == crate::store::sql::Dialect::Sqlite {
            self.conn().batch(&format!("PRAGMA cache_size = -{kib}"))?;
        }
        Ok(())
    }

    /// Claims job `id` for this daemon (`me`) for `lease_s` seconds, for its next chunk
    /// (fleet mode), and answers it as it stands. Another daemon's unexpired lease
    /// answers [`Claimed::No`]. The lease is on PostgreSQL's clock, so the daemons' clocks
    /// do not matter; the claim commits with the chunk it precedes, so a daemon killed
    /// mid-chunk keeps only its previous lease. On SQLite (one daemon per file) every
    /// claim of an open job succeeds. On PostgreSQL the claim and the read are one
    /// statement: one round trip per chunk.
    pub fn claim_job(&self, id: &str, me: &str, lease_s: u32) -> Result<Claimed, Error> {
        let postgres = self.conn().dialect() == crate::store::sql::Dialect::Postgres;
        if postgres {
            let claimed = finish(self.conn().opt(
                &format!(
                    "UPDATE bulk_operations
                        SET lease_owner = ?2, lease_until = clock_timestamp() + make_interval(secs => ?3)
                      WHERE id = ?1 AND status IN ('queued', 'processing')
                        AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until < clock_timestamp())
                     RETURNING {COLUMNS}"
                ),
                params![id, me, f64::from(lease_s)],
                job_from_row,
            )?)?;
            if let Some(job) = claimed {
                return Ok(Claimed::Job(Box::new(job)));
            }
        }
        // Why nothing was claimed on PostgreSQL; on SQLite, the job itself.
        Ok(match self.job(id)? {
            None => Claimed::No,
            Some(job) if job.status.is_terminal() => Claimed::Ended(Box::new(job)),
            Some(_) if postgres => Claimed::No,
            Some(job) => Claimed::Job(Box::new(job)),
        })
    }

    pub fn insert_job(&self, job: &NewJob<'_>, now: &str) -> Result<(), Error> {
        let row = params![
            job.id,
            job.name,
            job.payload,
            job.idempotency_key,
            job.total_rows,
            now,
            job.kind
        ];
        match job.held_by {
            // The hold is a lease like a runner's, on PostgreSQL's clock: the other daemons
            // skip the job until it runs out, and take it over as from a killed runner if
            // this daemon never claims it.
            Some((me, grace)) if self.conn().dialect() == crate::store::sql::Dialect::Postgres => {
                let held = [row, params![me, grace.as_secs_f64()]].concat();
                self.conn().execute(
                    "INSERT INTO bulk_operations (id, name, status, payload, idempotency_key, estimated_total_rows,
                                                  inserted_at, updated_at, kind, lease_owner, lease_until)
                     VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?6, ?7, ?8, clock_timestamp() + make_interval(secs => ?9))",
                    &held,
                )?
            }
            _ => self.conn().execute(
                "INSERT INTO bulk_operations (id, name, status, payload, idempotency_key, estimated_total_rows, inserted_at, updated_at, kind)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?6, ?7)",
                row,
            )?,
        };
        self.conn().notify_job(job.id)
    }

    /// Frees an idempotency key whose window has passed, so a new job may take it; the
    /// job that had it keeps everything else.
    pub fn release_job_key(&self, id: &str) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE bulk_operations SET idempotency_key = NULL WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Records one chunk's outcome; the caller wrote the chunk in this same transaction.
    /// The job becomes `processing` (with `started_at`) and, when every row is processed,
    /// `completed` (with `completed_at`). Answers the job as it now stands (`None` if it
    /// is gone).
    pub fn advance_job(
        &self,
        id: &str,
        outcome: &ChunkOutcome,
        now: &str,
    ) -> Result<Option<JobRow>, Error> {
        // The error items are read and written back only when the chunk adds some: most
        // chunks add none, and a statement less is a round trip less on PostgreSQL.
        let items = if outcome.errors.is_empty() {
            None
        } else {
            let text: String = self.conn().one(
                "SELECT error_items FROM bulk_operations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            let mut items: Vec<ErrorItem> = serde_json::from_str(&text)?;
            items.extend(outcome.errors.iter().cloned());
            Some(serde_json::to_string(&items)?)
        };
        let job = finish(self.conn().opt(
            &format!(
                "UPDATE bulk_operations SET
                    processed_rows = processed_rows + ?2,
                    success_count = success_count + ?3,
                    error_count = error_count + ?4,
                    error_items = coalesce(CAST(?5 AS text), error_items),
                    updated_at = ?6,
                    started_at = coalesce(started_at, ?6),
                    status = CASE WHEN processed_rows + ?2 >= estimated_total_rows THEN 'completed' ELSE 'processing' END,
                    completed_at = CASE WHEN processed_rows + ?2 >= estimated_total_rows THEN ?6 ELSE completed_at END
                 WHERE id = ?1
                 RETURNING {COLUMNS}"
            ),
            params![
                id,
                outcome.processed,
                outcome.succeeded,
                outcome.errors.len(),
                items.as_deref(),
                now
            ],
            job_from_row,
        )?)?;
        self.conn().notify_job(id)?;
        Ok(job)
    }

    /// Marks a job failed, with the reason as an error item.
    pub fn fail_job(&self, id: &str, message: &str, now: &str) -> Result<(), Error> {
        let sql = self.conn().pick(
            "UPDATE bulk_operations SET status = 'failed', failed_at = ?2, updated_at = ?2,
                started_at = coalesce(started_at, ?2),
                error_items = json_insert(error_items, '$[#]', json_object('id', '', 'message', ?3))
             WHERE id = ?1",
            "UPDATE bulk_operations SET status = 'failed', failed_at = ?2, updated_at = ?2,
                started_at = coalesce(started_at, ?2),
                error_items = (CAST(error_items AS jsonb)
                    || jsonb_build_array(jsonb_build_object('id', '', 'message', CAST(?3 AS text))))::text
             WHERE id = ?1",
        );
        self.conn().execute(sql, params![id, now, message])?;
        self.conn().notify_job(id)
    }

    /// Deletes terminal jobs that ended at or before `cutoff`; returns how many. (At: with
    /// `retention_days = 0` a job that ended in the same millisecond as the purge goes too.)
    pub fn purge_jobs(&self, cutoff: &str) -> Result<usize, Error> {
        self.conn().execute(
            "DELETE FROM bulk_operations
             WHERE status IN ('completed', 'failed') AND coalesce(completed_at, failed_at) <= ?1",
            params![cutoff],
        )
    }
}
