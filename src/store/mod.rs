//! The SQLite store: the only code that names rusqlite.
//!
//! One writer thread owns the only write connection; a few reader threads own read
//! connections (WAL mode, so reads never wait for writes). Callers hand a closure to
//! [`Db::read`] or [`Db::write`]; it runs on a database thread inside one transaction and
//! receives a [`Read`] or [`Write`] with the domain operations. A write closure that returns
//! an error rolls the whole transaction back, which makes every RPC method all-or-nothing.
//! The async runtime's workers never block on SQLite: they await a oneshot reply.
//! (Measured on this machine: dedicated threads beat `spawn_blocking` pools 2–4×; see
//! `../shared/design/stack-notes.md` §6.)
//!
//! A checkpointer thread with its own connection copies the WAL back into the database
//! file. SQLite's default is to do that inside the commit that takes the WAL past 1000
//! pages, so that one write (a bulk chunk, or an interactive set behind it) waited for a
//! checkpoint and its sync; here the writer only wakes the checkpointer, and a passive
//! checkpoint runs beside the writer without blocking it (a 1000-user bulk job 33 → 22–25
//! ms; a threshold of 256 pages instead of 1000 measured the same).
//!
//! Reads that miss the cache (`cache`) cost 35–60 µs of server CPU on a 1M-user database,
//! half of it in the kernel: waking a reader thread and `pread` of pages the OS page cache
//! holds. The readers take jobs from one crossbeam channel, whose receivers share no lock;
//! std's receiver behind a mutex woke both readers for every job (1M point reads: 1.1 →
//! 0.75 context switches per call, calls/s +25%). Measured and not kept: bigger reader page
//! caches (8, 16 MiB), rowid tables instead of `WITHOUT ROWID` (interior pages 45 → 3 MB,
//! no faster: the pages come from the OS page cache either way), and point reads on the
//! async worker itself (the same CPU per call, and fewer calls/s, since the reads no longer
//! ran beside the worker on the other core). Of a 1000-recipient evaluation that misses the
//! cache, about half the CPU is SQLite (a quarter of it `memcmp` on keys in pages just
//! read), a fifth parsing the stored JSON, and the rest deciding and answering.

pub mod backup;
mod cache;
pub mod export;
mod jobs;
pub mod lock;
pub mod log;
mod migrate;
mod pages;
pub mod past;
mod pcache;
pub mod postgres;
mod reads;
mod repo;
pub mod sql;
pub mod time;
mod writer;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::watch;

pub use cache::{Cache, CacheStats, Inputs, Ticket, Touched, View};
pub use jobs::{ChunkOutcome, Claimed, ErrorItem, JobRow, JobStatus, NewJob, NextJob};
pub use migrate::latest as latest_schema_version;
pub use pages::{Cursor, Page, PageQuery};
pub use reads::{Snapshot, Wanted};
pub use repo::{
    Counts, EvaluationInputs, MemberPage, Read, RecipientRow, TenantRow, Write, decode_cursor,
};

use crate::config::Durability;
use crate::model::change::Origin;
use postgres::PgConn;
pub use postgres::PgOptions;
use sql::Conn;

/// What can go wrong below the domain: all of it is internal to clients, except a full disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("migration {name} failed: {source}")]
    Migration {
        name: String,
        source: rusqlite::Error,
    },
    #[error(
        "the database has schema version {found}, newer than this prefsd knows ({known}); use a newer prefsd"
    )]
    TooNew { found: u32, known: u32 },
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the database threads have stopped")]
    Closed,
    #[error(
        "the database file is damaged ({0}); restore it from a backup, or see `PRAGMA integrity_check`"
    )]
    Damaged(String),
    #[error("could not start a database thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A write that changed stored state was made without an [`Origin`]: a bug, refused
    /// so that no change enters the log without its actor.
    #[error("a {0} change was written without an origin")]
    NoOrigin(&'static str),
    /// The writer appended a change before it had learnt the log's newest `seq`
    /// (`log::Memo::learn_head`): a bug, refused rather than risking a reused seq.
    #[error("the change log's newest seq was not read before the write")]
    HeadUnknown,
    #[error("the change log holds an unknown kind {0:?}")]
    UnknownChangeKind(String),
    #[error("cannot create the database file: {0}")]
    Create(std::io::Error),
    #[error("postgresql: {0}")]
    Pg(#[from] ::postgres::Error),
    #[error("postgresql migration {name} failed: {source}")]
    PgMigration {
        name: String,
        source: ::postgres::Error,
    },
    /// The store cannot be reached (PostgreSQL down, restarting or unreachable): the
    /// caller may retry later; a write it was told this about may or may not have been
    /// applied if the connection was lost during its commit.
    #[error("the database cannot be reached: {0}")]
    Unavailable(::postgres::Error),
    #[error("a stored value is not what the store expects: {0}")]
    Decode(String),
    #[error("{0}")]
    Config(String),
    /// What the PostgreSQL backend leaves to PostgreSQL's own tools (backups, restore).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl Error {
    /// True when SQLite ran out of space (disk full or `max_page_count` reached).
    pub fn is_full(&self) -> bool {
        match self {
            Error::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            Error::Pg(e) => e.code() == Some(&::postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }

    /// True when the store cannot be reached now (the `unavailable` error of fleet.md
    /// §5): a lost or refused PostgreSQL connection, or a server shutting down.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Pg(e) => postgres::is_connection_error(e),
            _ => false,
        }
    }
}

type Job = Box<dyn FnOnce(&mut Backend) + Send>;

/// Where the store is: a SQLite file (the default) or a schema on PostgreSQL (fleet mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgOptions),
}

/// The connection a database thread owns.
enum Backend {
    Sqlite(Connection),
    /// In a `RefCell` because the `postgres` client needs `&mut` for every statement,
    /// while the domain operations share a `&` of their transaction.
    Postgres(Box<RefCell<PgConn>>),
}

/// Job notices kept for a slow receiver; one that lags just re-reads (see
/// [`Db::job_notices`]).
const JOB_NOTICES: usize = 256;

/// Reader threads: enough to keep both cores busy without piling up connections.
const READERS: usize = 2;

/// A handle on the database threads. Cloning is cheap; [`Db::close`] stops the threads.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Sender<writer::WriterJob>,
    readers: Sender<Job>,
    threads: Mutex<Threads>,
    schema_version: u32,
    /// Calls made through [`Db::read`] and [`Db::write`]: see [`Db::calls`].
    calls: AtomicU64,
    /// Parsed rows for reads on the async side; the writer invalidates after commit.
    cache: Arc<Cache>,
    /// The checkpointer's queue, for [`Db::wait_for_checkpoints`] (SQLite only).
    checkpoint_barrier: Option<Mutex<mpsc::SyncSender<Wake>>>,
    /// Where it is (the export opens a connection of its own there).
    location: Location,
    /// Whether the cache follows every daemon's writes (always, on SQLite).
    feed: Arc<Feed>,
    /// Tells the PostgreSQL listener to stop; its thread is joined by [`Db::close`].
    listener: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// This daemon's name in job leases: unique per open.
    node: String,
    /// Jobs queued or moved on by any daemon of a fleet (see [`Db::job_notices`]).
    job_notices: tokio::sync::broadcast::Sender<Option<String>>,
    /// What every write transaction tells after its commit.
    commits: Arc<Commits>,
}

/// What a write transaction tells once it has committed: the cache (which drops what it
/// touched) and the change log's head (see [`Db::head`]); and whether it appends to the log
/// at all ([`Options::skip_change_log`]).
struct Commits {
    cache: Arc<Cache>,
    head: watch::Sender<i64>,
    skip_log: bool,
    /// The writer's memory of the log ([`log::Memo`]); only the writer thread locks it.
    log: Mutex<log::Memo>,
    /// Writes committed, and the transactions that committed them (group commit).
    writes: AtomicU64,
    transactions: AtomicU64,
}

/// The state of a fleet daemon's change feed (fleet.md §3), and the cache budget that
/// applies while the feed is whole.
struct Feed {
    coherent: AtomicBool,
    reconnects: AtomicU64,
    budget: AtomicU64,
}

impl Feed {
    fn new(budget: usize) -> Feed {
        Feed {
            coherent: AtomicBool::new(true),
            reconnects: AtomicU64::new(0),
            budget: AtomicU64::new(budget as u64),
        }
    }

    /// The feed is whole (the cache may serve and fill) or lost (it is emptied and off,
    /// and no read begun before it was lost inserts afterwards).
    fn set_coherent(&self, cache: &Cache, coherent: bool) {
        let was = self.coherent.swap(coherent, Ordering::SeqCst);
        // A feed that stayed whole missed nothing (its catch-up invalidated what changed):
        // forgetting the tickets then would only refuse the inserts of reads in flight.
        if was == coherent {
            return;
        }
        cache.forget_tickets();
        if coherent {
            cache.set_budget(self.budget.load(Ordering::Relaxed) as usize);
        } else {
            cache.set_budget(0);
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// [`Db::write_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: u64,
    pub transactions: u64,
}

/// What `daemon.status` says of the store (fleet.md §1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackendInfo {
    pub backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// `daemon.status`'s `store` (fleet.md §1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreStatus {
    #[serde(flatten)]
    pub info: BackendInfo,
    /// Whether this daemon's cache follows every daemon's writes (always on SQLite).
    pub coherent: bool,
    /// How often the change feed from PostgreSQL was lost.
    pub reconnects: u64,
}

impl Commits {
    /// Counts a committed transaction of `writes` writes.
    fn counted(&self, writes: usize) {
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the head on to `seq`, never back: the writer and the listener both report
    /// commits, the listener's possibly later than the writer's own.
    fn advance_head(&self, seq: i64) {
        self.head.send_if_modified(|head| {
            let newer = seq > *head;
            if newer {
                *head = seq;
            }
            newer
        });
    }
}

/// The database threads, joined by [`Db::close`] in an order that leaves a read-write
/// connection last (see there).
#[derive(Default)]
struct Threads {
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

/// The thread body of the writer and the readers: run jobs until the queue closes. A
/// PostgreSQL connection lost meanwhile is made again when a job begins its transaction
/// (`begin_or_reconnect`).
fn serve_jobs(jobs: crossbeam_channel::Receiver<Job>) -> impl FnOnce(&mut Backend) + Send {
    move |backend| {
        for job in jobs {
            job(backend);
        }
    }
}

/// What both backends start alike: the writer's thread and the readers' threads, each on
/// the connection given, the cache, and what commits tell.
struct Started {
    writer: Sender<writer::WriterJob>,
    readers: Sender<Job>,
    threads: Threads,
    cache: Arc<Cache>,
    commits: Arc<Commits>,
    feed: Arc<Feed>,
    /// Sent on by the PostgreSQL listener alone: on SQLite this daemon's worker is the
    /// only one.
    job_notices: tokio::sync::broadcast::Sender<Option<String>>,
}

impl Started {
    fn start(
        writer: Backend,
        readers: Vec<Backend>,
        head: i64,
        options: &Options,
    ) -> Result<Started, Error> {
        let budget = options.read_cache_mb as usize * MIB;
        let cache = Arc::new(Cache::new(budget));
        let commits = Arc::new(Commits {
            cache: Arc::clone(&cache),
            head: watch::channel(head).0,
            skip_log: options.skip_change_log,
            log: Mutex::default(),
            writes: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
        });
        let (writer_tx, writer_rx) = crossbeam_channel::unbounded();
        let writer_thread = spawn_thread(
            "prefsd-db-writer",
            writer,
            writer::serve(writer_rx, Arc::clone(&commits)),
        )?;
        // One shared queue: an idle reader takes the next job, so a slow read does not hold
        // up the ones queued behind it. A job wakes one waiting reader; with std's channel
        // behind a mutex, it also woke the other, which had been waiting for the mutex.
        let (readers_tx, readers_rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for (i, reader) in readers.into_iter().enumerate() {
            let rx = readers_rx.clone();
            threads.push(spawn_thread(
                &format!("prefsd-db-reader-{i}"),
                reader,
                move |backend| {
                    crate::sched::prefer_short_slices();
                    serve_jobs(rx)(backend);
                },
            )?);
        }
        Ok(Started {
            writer: writer_tx,
            readers: readers_tx,
            threads: Threads {
                writer: Some(writer_thread),
                checkpointer: None,
                readers: threads,
            },
            commits,
            cache,
            feed: Arc::new(Feed::new(budget)),
            job_notices: tokio::sync::broadcast::channel(JOB_NOTICES).0,
        })
    }

    /// The handle on them, with what only one backend has: SQLite's checkpointer, the
    /// PostgreSQL listener.
    fn into_db(
        mut self,
        schema_version: u32,
        location: Location,
        checkpointer: Option<Checkpointer>,
        listener: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    ) -> Db {
        let checkpoint_barrier = checkpointer.map(|c| {
            self.threads.checkpointer = Some(c.thread);
            Mutex::new(c.wakes)
        });
        Db {
            inner: Arc::new(Inner {
                writer: self.writer,
                readers: self.readers,
                threads: Mutex::new(self.threads),
                schema_version,
                calls: AtomicU64::new(0),
                cache: self.cache,
                checkpoint_barrier,
                location,
                feed: self.feed,
                listener,
                node: uuid::Uuid::new_v4().to_string(),
                job_notices: self.job_notices,
                commits: self.commits,
            }),
        }
    }
}

impl Db {
    /// Opens (creating if needed) and migrates the database, then starts the threads.
    pub fn open(path: &Path, durability: Durability) -> Result<Db, Error> {
        Db::open_with(
            path,
            Options {
                durability,
                max_database_mb: None,
                read_cache_mb: crate::config::Limits::default().read_cache_mb,
                max_staleness_ms: 1000,
                skip_change_log: false,
            },
        )
    }

    /// Opens the store at `location` with every option; the daemon opens with its settings.
    pub fn open_at(location: &Location, options: Options) -> Result<Db, Error> {
        match location {
            Location::Sqlite(path) => Db::open_with(path, options),
            Location::Postgres(pg) => Db::open_postgres(pg, options),
        }
    }

    /// Connects to PostgreSQL (one connection per database thread), migrates the schema,
    /// and starts the threads.
    fn open_postgres(pg: &PgOptions, options: Options) -> Result<Db, Error> {
        let mut writer = PgConn::connect(pg, options.durability)?;
        let schema_version = writer.migrate()?;
        let writer = RefCell::new(writer);
        writer.borrow_mut().begin_read()?;
        let head = Read::new(Conn::Postgres(&writer)).log().head();
        writer.borrow_mut().rollback();
        let head = head?;
        let mut readers = Vec::new();
        for _ in 0..READERS {
            let conn = PgConn::connect(pg, options.durability)?;
            readers.push(Backend::Postgres(Box::new(RefCell::new(conn))));
        }
        let started = Started::start(Backend::Postgres(Box::new(writer)), readers, head, &options)?;
        let (cache, commits, feed) = (&started.cache, &started.commits, &started.feed);
        let stop = Arc::new(AtomicBool::new(false));
        let hooks = postgres::ListenerHooks {
            invalidate: {
                let cache = Arc::clone(cache);
                Box::new(move |touched| cache.invalidate(touched))
            },
            head: {
                let commits = Arc::clone(commits);
                Box::new(move |seq| commits.advance_head(seq))
            },
            coherent: {
                let (cache, feed) = (Arc::clone(cache), Arc::clone(feed));
                Box::new(move |coherent| feed.set_coherent(&cache, coherent))
            },
            job: {
                let notices = started.job_notices.clone();
                Box::new(move |id| {
                    let _ = notices.send(id);
                })
            },
        };
        let listener = postgres::spawn_listener(
            pg.clone(),
            options.durability,
            head,
            std::time::Duration::from_millis(options.max_staleness_ms.into()),
            Arc::clone(&stop),
            hooks,
        )?;
        Ok(started.into_db(
            schema_version,
            Location::Postgres(pg.clone()),
            None,
            Some((stop, listener)),
        ))
    }

    /// [`Db::open`] with every option, on a SQLite file.
    pub fn open_with(path: &Path, options: Options) -> Result<Db, Error> {
        let durability = options.durability;
        let mut writer = open_connection(path, durability, Role::Writer)?;
        check_integrity(&writer)?;
        if let Some(mb) = options.max_database_mb {
            set_max_size(&writer, Some(mb))?;
        }
        let schema_version = migrate::migrate(&mut writer)?;
        let head = Read::new(Conn::Sqlite(&writer)).log().head()?;
        let checkpointer = Checkpointer::start(path, durability, &mut writer)?;
        let mut readers = Vec::new();
        for _ in 0..READERS {
            readers.push(Backend::Sqlite(open_connection(
                path,
                durability,
                Role::Reader,
            )?));
        }
        let started = Started::start(Backend::Sqlite(writer), readers, head, &options)?;
        Ok(started.into_db(
            schema_version,
            Location::Sqlite(path.to_path_buf()),
            Some(checkpointer),
            None,
        ))
    }

    /// Writes committed since the store opened, and the transactions that committed them:
    /// on SQLite the writer commits the writes queued together in one (`store::writer`).
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            writes: self.inner.commits.writes.load(Ordering::Relaxed),
            transactions: self.inner.commits.transactions.load(Ordering::Relaxed),
        }
    }

    /// The newest `seq` of the change log, watched: it moves on after each commit that
    /// appended changes, so a follower of the log (`changes.subscribe`) wakes on it instead
    /// of polling.
    pub fn head(&self) -> watch::Receiver<i64> {
        self.inner.commits.head.subscribe()
    }

    /// The read cache: see [`Cache`]. A caller takes a [`Cache::ticket`] before a read whose
    /// result it wants to insert.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.inner.cache
    }

    /// Where the store is.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// What the store runs on, for `daemon.status`.
    pub fn backend(&self) -> BackendInfo {
        match &self.inner.location {
            Location::Sqlite(_) => BackendInfo {
                backend: "sqlite",
                schema: None,
            },
            Location::Postgres(pg) => BackendInfo {
                backend: "postgres",
                schema: Some(pg.schema.clone()),
            },
        }
    }

    /// This daemon's name in the leases of fleet jobs.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Job ids queued or moved on by any daemon of a fleet (PostgreSQL), and `None` when
    /// notices may have been missed (the feed was lost and is back): the bulk worker
    /// wakes on them, and progress subscribers re-read the job. Nothing comes on SQLite,
    /// where this daemon's own worker is the only one.
    pub fn job_notices(&self) -> tokio::sync::broadcast::Receiver<Option<String>> {
        self.inner.job_notices.subscribe()
    }

    /// `daemon.status`'s `store`.
    pub fn store_status(&self) -> StoreStatus {
        StoreStatus {
            info: self.backend(),
            coherent: self.inner.feed.coherent.load(Ordering::Relaxed),
            reconnects: self.inner.feed.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Sets the read cache's budget (`limits.read_cache_mb`); while a fleet daemon's feed
    /// is lost the cache stays off and takes the budget when the feed is back.
    pub fn set_cache_budget(&self, budget: usize) {
        let feed = &self.inner.feed;
        feed.budget.store(budget as u64, Ordering::Relaxed);
        if feed.coherent.load(Ordering::SeqCst) {
            self.inner.cache.set_budget(budget);
        }
    }

    /// True on the PostgreSQL backend.
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner.location, Location::Postgres(_))
    }

    pub fn schema_version(&self) -> u32 {
        self.inner.schema_version
    }

    /// How many calls [`Db::read`] and [`Db::write`] have taken so far. The bulk worker
    /// compares it across a chunk to see whether anyone else is using the database.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Sets (or with `None` lifts) the size limit of the database, `limits.max_database_mb`,
    /// on the writer connection: once the file would grow past it, writes fail with a full
    /// database ([`Error::is_full`]) and roll back, as on a full disk. A limit below the
    /// current size stops all growth; pages freed by deletes are reused.
    pub async fn set_max_size(&self, max_database_mb: Option<u64>) -> Result<(), Error> {
        self.queue(|answer| {
            let job: Job = Box::new(move |backend| {
                answer(match backend {
                    Backend::Sqlite(conn) => set_max_size(conn, max_database_mb),
                    // PostgreSQL has no per-database size limit to set; a full disk there
                    // is still refused as full (`Error::is_full`).
                    Backend::Postgres(_) => Ok(()),
                });
            });
            self.inner
                .writer
                .send(writer::WriterJob::Plain(job))
                .is_ok()
        })
        .await
    }

    /// Waits until the checkpointer has handled every wake sent before this call. The bulk
    /// worker uses it to count the checkpoint a chunk caused in the chunk's cost (and so in
    /// its pause); the jobs benchmark and the store's tests, to see checkpoints happen
    /// without sleeping. Blocks; returns at once if the threads have stopped.
    pub fn wait_for_checkpoints(&self) {
        let (done, wait) = mpsc::channel();
        let Some(barrier) = &self.inner.checkpoint_barrier else {
            return;
        };
        let sent = match barrier.lock() {
            Ok(queue) => queue.send(Wake::Barrier(done)).is_ok(),
            Err(_) => false,
        };
        if sent {
            let _ = wait.recv();
        }
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on a reader thread.
    pub async fn read<R, E>(
        &self,
        f: impl FnOnce(&Read<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.read_queued(f).await
    }

    /// [`Db::read`], queued at once rather than when first awaited, so that a caller can
    /// keep a read in flight on each reader thread and await them in order.
    pub fn read_queued<R, E>(
        &self,
        f: impl FnOnce(&Read<'_>) -> Result<R, E> + Send + 'static,
    ) -> impl Future<Output = Result<R, E>> + Send + 'static
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.queue(|answer| {
            let job: Job = Box::new(move |backend| answer(in_read_transaction(backend, f)));
            self.inner.readers.send(job).is_ok()
        })
    }

    /// Runs `f` in one write transaction on the writer thread: committed if `f` returns
    /// `Ok`, rolled back otherwise. The reply is sent only after the commit, so an
    /// acknowledged write is durable (to the configured `durability`). The changes `f`
    /// makes to stored state are appended to the change log with `origin`, in the same
    /// transaction. On SQLite the writer may commit it together with the writes queued
    /// beside it, each all-or-nothing on its own (`store::writer`).
    pub async fn write_as<R, E>(
        &self,
        origin: Origin,
        f: impl FnOnce(&Write<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.queue(|answer| self.send_write(Some(origin), f, answer))
            .await
    }

    /// [`Db::write_as`] for the store's own bookkeeping (the job table), which changes no
    /// state the log records: a change made through it is refused ([`Error::NoOrigin`]).
    pub async fn write<R, E>(
        &self,
        f: impl FnOnce(&Write<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.queue(|answer| self.send_write(None, f, answer)).await
    }

    /// The blocking form of [`Db::write`], for code already on a blocking thread (`bench
    /// seed` and tests).
    pub fn write_blocking<R, E>(
        &self,
        origin: Origin,
        f: impl FnOnce(&Write<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let answer: writer::Answer<R, E> = Box::new(move |result| {
            let _ = tx.send(result);
        });
        if !self.send_write(Some(origin), f, answer) {
            return Err(E::from(Error::Closed));
        }
        rx.recv().map_err(|_| E::from(Error::Closed))?
    }

    /// Puts the write transaction `f` on the writer's queue, to be answered through
    /// `answer`; false when the writer has stopped.
    fn send_write<R, E>(
        &self,
        origin: Option<Origin>,
        f: impl FnOnce(&Write<'_>) -> Result<R, E> + Send + 'static,
        answer: writer::Answer<R, E>,
    ) -> bool
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let write = writer::Body { origin, f, answer };
        self.inner
            .writer
            .send(writer::WriterJob::Write(Box::new(write)))
            .is_ok()
    }

    /// Queues a job now (`send` puts it on a thread's queue with the answer it must send);
    /// the future answers its result.
    fn queue<R, E>(
        &self,
        send: impl FnOnce(writer::Answer<R, E>) -> bool,
    ) -> impl Future<Output = Result<R, E>> + Send + 'static
    where
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = answer_slot();
        let queued = send(answer);
        async move {
            if !queued {
                return Err(E::from(Error::Closed));
            }
            answered.await
        }
    }

    /// Stops the threads after the jobs already queued and waits for them, so every
    /// connection is closed (and the WAL checkpointed) before this returns. It blocks; the
    /// server calls it last, once every other handle is gone. If another handle is still
    /// alive the threads keep serving it and are not waited for.
    pub fn close(self) {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                let Inner {
                    writer,
                    readers,
                    threads,
                    checkpoint_barrier,
                    listener,
                    ..
                } = inner;
                if let Some((stop, thread)) = listener {
                    stop.store(true, Ordering::Relaxed);
                    let _ = thread.join();
                }
                // Readers first, then the writer, then the checkpointer: SQLite checkpoints
                // the WAL into the database file and removes it when the last connection
                // closes, which must be a read-write one, and only if no other connection
                // is open (a connection in WAL mode holds a shared lock while it is). The
                // checkpointer's queue closes when its last sender goes: the writer's hook
                // goes as the writer closes, so the sender here is kept until the writer
                // has closed; two connections closing at once could each see the other
                // and leave the WAL behind.
                let threads = threads.into_inner().unwrap_or_default();
                drop(readers);
                for thread in threads.readers {
                    let _ = thread.join();
                }
                drop(writer);
                if let Some(thread) = threads.writer {
                    let _ = thread.join();
                }
                drop(checkpoint_barrier);
                if let Some(thread) = threads.checkpointer {
                    let _ = thread.join();
                }
            }
            Err(_) => tracing::warn!(
                "database closed while still in use; its threads stop when the last user does"
            ),
        }
    }
}

/// Runs `f` in one read transaction: a consistent snapshot of all its statements.
fn in_read_transaction<R, E>(
    backend: &mut Backend,
    f: impl FnOnce(&Read<'_>) -> Result<R, E>,
) -> Result<R, E>
where
    E: From<Error>,
{
    match backend {
        Backend::Sqlite(conn) => {
            let tx = conn.transaction().map_err(Error::from)?;
            let result = f(&Read::new(Conn::Sqlite(&tx)));
            // A read transaction has nothing to commit; ending it releases the snapshot.
            drop(tx);
            result
        }
        Backend::Postgres(pg) => {
            begin_or_reconnect(pg.get_mut(), PgConn::begin_read)?;
            let result = f(&Read::new(Conn::Postgres(pg)));
            pg.get_mut().rollback();
            result
        }
    }
}

/// Begins a transaction; when the connection turns out to be dead (PostgreSQL restarted
/// since its last use), connects again and begins once more. Nothing was sent yet, so
/// the retry cannot apply anything twice; a connection lost later in the transaction is
/// the caller's `unavailable`.
fn begin_or_reconnect(
    pg: &mut PgConn,
    begin: fn(&mut PgConn) -> Result<(), Error>,
) -> Result<(), Error> {
    match begin(pg) {
        Err(Error::Pg(e)) if postgres::is_connection_error(&e) => {
            pg.reconnect().map_err(unavailable_if_lost)?;
            tracing::info!("reconnected to PostgreSQL");
            begin(pg).map_err(unavailable_if_lost)
        }
        other => other.map_err(unavailable_if_lost),
    }
}

/// A connection error as [`Error::Unavailable`], so that the caller hears "retry later".
fn unavailable_if_lost(e: Error) -> Error {
    match e {
        Error::Pg(e) if postgres::is_connection_error(&e) => Error::Unavailable(e),
        other => other,
    }
}

/// An answer and the future that awaits it; the future answers [`Error::Closed`] if the job
/// is dropped unanswered (the threads stopped).
fn answer_slot<R, E>() -> (
    writer::Answer<R, E>,
    impl Future<Output = Result<R, E>> + Send + 'static,
)
where
    R: Send + 'static,
    E: From<Error> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The caller may have gone away (a dropped request); the result is then unused, but a
    // write has still committed or rolled back as a whole.
    let answer: writer::Answer<R, E> = Box::new(move |result| {
        let _ = tx.send(result);
    });
    (answer, async move {
        rx.await.map_err(|_| E::from(Error::Closed))?
    })
}

fn spawn_thread(
    name: &str,
    mut backend: Backend,
    body: impl FnOnce(&mut Backend) + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    Ok(std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || body(&mut backend))?)
}

/// `PRAGMA quick_check` (it reads every page, about a second per GB): a database damaged
/// inside, not only in its header, is refused at start instead of answering some calls
/// with internal errors. It only reads, but through the writer's page cache, which it
/// would fill with 32 MiB of pages no call asked for (and the allocator keeps them
/// resident after they are freed), so it runs with a 1 MiB cache: it reads each page once.
fn check_integrity(conn: &Connection) -> Result<(), Error> {
    let cache_size: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA cache_size = -1024")?;
    let found: Vec<String> = {
        let mut stmt = conn.prepare("PRAGMA quick_check(3)")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    conn.execute_batch(&format!(
        "PRAGMA shrink_memory; PRAGMA cache_size = {cache_size};"
    ))?;
    match found.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(Error::Damaged(found.join("; "))),
    }
}

/// How to open the database (from the daemon's settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub durability: Durability,
    /// `limits.max_database_mb`: `PRAGMA max_page_count` on the writer; `None` for no limit.
    pub max_database_mb: Option<u64>,
    /// `limits.read_cache_mb`: the read cache's budget; 0 for no cache.
    pub read_cache_mb: u32,
    /// `[store] max_staleness_ms` (PostgreSQL): how long another daemon's write may go
    /// unseen by this daemon's cache.
    pub max_staleness_ms: u32,
    /// Benchmarks only: append nothing to the change log, to measure what it costs a write
    /// (history.md §6). Never for a daemon: history, point-in-time answers and the change
    /// feed would miss every change.
    pub skip_change_log: bool,
}

/// One mebibyte, for the settings given in MiB.
pub const MIB: usize = 1 << 20;

/// `PRAGMA max_page_count` for a limit in MiB (`None`: SQLite's largest, no limit).
fn set_max_size(conn: &Connection, max_database_mb: Option<u64>) -> Result<(), Error> {
    let pages = match max_database_mb {
        Some(mb) => {
            let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let page_size = u64::try_from(page_size).unwrap_or(4096).max(1);
            (mb.saturating_mul(1024 * 1024) / page_size).clamp(1, 0xffff_fffe)
        }
        None => 0xffff_fffe,
    };
    // The pragma answers the limit in force (never below the current size).
    let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get(0)
    })?;
    Ok(())
}

/// What a connection is for, which decides how it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
    Checkpointer,
}

/// Creates the database file, if there is none yet, readable and writable by its owner
/// alone (0600, whatever the umask): it holds people's properties and choices. SQLite
/// gives the `-wal` and `-shm` files it makes later the database file's mode. An existing
/// file keeps the mode its owner chose.
fn create_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Create(e)),
    }
}

fn open_connection(path: &Path, durability: Durability, role: Role) -> Result<Connection, Error> {
    // Before the first connection, while SQLite can still be configured.
    pcache::install();
    let flags = if role == Role::Reader {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        create_private(path)?;
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if role == Role::Writer {
        // WAL lets readers work while the writer commits.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            tracing::warn!(
                mode,
                "the database is not in WAL mode; reads may wait for writes"
            );
        }
    }
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
    ))?;
    if role == Role::Writer {
        // The writer touches pages all over the tables (bulk jobs write random users); a
        // 32 MiB page cache keeps them in memory instead of re-reading them per statement.
        // Readers keep SQLite's default (2 MiB each): the OS page cache serves them.
        conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_PAGE_CACHE_KIB};"))?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The writer's page cache, in KiB (bulk jobs shrink it while they run: `store::jobs`).
pub(super) const WRITER_PAGE_CACHE_KIB: u32 = 32 * 1024;

/// A message to the checkpointer.
enum Wake {
    /// The WAL has grown past [`CHECKPOINT_PAGES`]: copy it back.
    Due,
    /// Answer once every earlier message is handled.
    Barrier(mpsc::Sender<()>),
}

/// The WAL size (in pages) past which the writer wakes the checkpointer: SQLite's default
/// for its own automatic checkpoints, which this replaces.
const CHECKPOINT_PAGES: i32 = 1000;

/// The checkpointer thread and its queue.
struct Checkpointer {
    thread: JoinHandle<()>,
    wakes: mpsc::SyncSender<Wake>,
}

impl Checkpointer {
    /// Starts the thread and hooks `writer`'s commits to it (which turns off SQLite's
    /// automatic checkpoints on that connection). The thread ends when the writer's
    /// connection and every [`Checkpointer::wakes`] sender are gone.
    fn start(
        path: &Path,
        durability: Durability,
        writer: &mut Connection,
    ) -> Result<Checkpointer, Error> {
        let conn = open_connection(path, durability, Role::Checkpointer)?;
        // Room for one wake: a commit while one is pending has nothing to add.
        let (wakes, queue) = mpsc::sync_channel::<Wake>(1);
        let hook = wakes.clone();
        let caught_up = Arc::new(AtomicBool::new(false));
        let tail_due = Arc::clone(&caught_up);
        writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
            if tail_due.swap(false, Ordering::AcqRel) {
                // The checkpointer has copied what the WAL held when it began; what the
                // writer appended meanwhile is copied here, between two transactions, so
                // that the next one finds the WAL wholly copied and starts it over.
                // Without this the checkpointer never caught up under a steady stream
                // of commits: the WAL grew without end (22 → 34 MB in the 7 s of `cargo
                // bench --bench history -- --quick`) and every checkpoint re-sorted its
                // newest 4096 frames (`walMerge`, a quarter of the checkpointer's CPU).
                match wal.checkpoint() {
                    Ok(_) => {}
                    // The checkpointer has begun another: it will copy the tail.
                    Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
                    Err(e) => tracing::warn!(error = %e, "checkpoint of the WAL's tail failed"),
                }
            } else if pages >= CHECKPOINT_PAGES {
                // Full means a wake is already pending; disconnected means shutting down.
                let _ = hook.try_send(Wake::Due);
            }
            // The commit has happened whatever this returns; an error here would only
            // make it look failed to the caller.
            Ok(())
        }))?;
        let thread = spawn_thread(
            "prefsd-db-checkpointer",
            Backend::Sqlite(conn),
            move |backend| {
                let Backend::Sqlite(conn) = backend else {
                    return;
                };
                for wake in queue {
                    match wake {
                        Wake::Due => {
                            if checkpoint(conn) {
                                caught_up.store(true, Ordering::Release);
                            }
                        }
                        Wake::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            },
        )?;
        Ok(Checkpointer { thread, wakes })
    }
}

/// A passive checkpoint: copies what it can without waiting for readers or the writer,
/// which go on meanwhile. Frames it cannot copy yet (a reader still needs them) are
/// copied by a later one; the WAL starts over once all are, which the writer sees to
/// (`Checkpointer::start`). Answers whether it copied every frame the WAL held.
fn checkpoint(conn: &Connection) -> bool {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match result {
        Ok((wal, copied)) => {
            tracing::debug!(wal, copied, "checkpoint");
            wal > 0 && copied == wal
        }
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint failed; the next commit retries");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};

    use super::{Db, Durability, Error};
    use crate::model::RecipientKey;

    /// Under a steady stream of commits the checkpointer, copying beside the writer,
    /// never finds the WAL wholly copied; the writer copies the tail so that the WAL
    /// starts over, and the file stays near the size that wakes the checkpointer instead
    /// of growing with every commit.
    #[test]
    fn the_wal_starts_over_under_a_steady_stream_of_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prefsd.db");
        let db = Db::open(&path, Durability::Normal).expect("open");
        let wal = || {
            std::fs::metadata(path.with_extension("db-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let origin = super::Origin::new(crate::model::change::Actor::Config, "test");
        let mut properties = Map::new();
        properties.insert("note".into(), Value::String("x".repeat(3000)));
        // Each commit writes about three pages (a recipient's row, its change, the index
        // entries): 12 000 commits put about 140 MB through the WAL.
        for i in 0..12_000 {
            let properties = properties.clone();
            db.write_blocking(origin.clone(), move |w| {
                w.put_recipient(
                    &RecipientKey::user(format!("u{}", i % 5000)),
                    &properties,
                    "now",
                )
            })
            .expect("write");
        }
        // The file keeps its largest size: what the writer appends while a checkpoint
        // copies stays in it, more on a loaded machine (18.8 MB seen beside a test run).
        // Without the writer's step it passes 190 MB.
        let bound = 12 * 4096 * super::CHECKPOINT_PAGES as u64;
        assert!(
            wal() < bound,
            "the WAL grew to {} bytes (bound {bound})",
            wal()
        );
        db.close();
    }

    #[test]
    fn a_commit_that_grows_the_wal_is_checkpointed_into_the_database_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prefsd.db");
        let db = Db::open(&path, Durability::Normal).expect("open");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        // About 8 MB in one transaction: twice the WAL size that wakes the checkpointer.
        // In WAL mode only a checkpoint writes to the database file.
        let origin = super::Origin::new(crate::model::change::Actor::Config, "test");
        db.write_blocking(origin, |w| {
            let mut properties = Map::new();
            properties.insert("note".into(), Value::String("x".repeat(4000)));
            for i in 0..2000 {
                w.put_recipient(&RecipientKey::user(format!("u{i}")), &properties, "now")?;
            }
            Ok::<_, Error>(())
        })
        .expect("write");
        db.wait_for_checkpoints();
        let after = size();
        assert!(
            after >= before + 7_000_000,
            "the database file grew from {before} to {after} bytes only"
        );
        db.close();
        assert!(
            !dir.path().join("prefsd.db-wal").exists(),
            "closing leaves no WAL behind"
        );
    }

    /// The counts `daemon.status` shows come from the table the triggers keep, not from
    /// counting: on 300 000 users they answer in well under the 5 ms the status may take
    /// (counting them took tens of milliseconds), and they stay right through inserts,
    /// updates, deletes and the cascade of a recipient's sets.
    fn test_origin() -> super::Origin {
        super::Origin::new(crate::model::change::Actor::Config, "test")
    }

    #[test]
    fn counts_are_kept_not_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prefsd.db");
        let db = Db::open(&path, Durability::Normal).expect("open");
        db.write_blocking(test_origin(), |w| {
            w.conn().batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
                 INSERT INTO recipients (collection, id, created_at, updated_at)
                 SELECT '', 'u' || i, 'now', 'now' FROM n;",
            )?;
            Ok::<_, Error>(())
        })
        .expect("seeding");
        let counts = || {
            db.write_blocking(test_origin(), |r| {
                let started = std::time::Instant::now();
                let counts = r.counts()?;
                Ok::<_, Error>((counts, started.elapsed()))
            })
            .expect("counts")
        };
        let fastest = (0..3).map(|_| counts().1).min().unwrap_or_default();
        assert!(
            fastest < std::time::Duration::from_millis(5),
            "the counts took {fastest:?}"
        );
        assert_eq!(counts().0.users, 300_000);
        db.write_blocking(test_origin(), |w| {
            let dana = RecipientKey::user("dana");
            w.put_recipient(&dana, &Map::new(), "now")?;
            w.put_recipient(&dana, &Map::new(), "later")?;
            w.put_recipient(&RecipientKey::object("projects", "p1"), &Map::new(), "now")?;
            w.conn().batch(
                "INSERT INTO preference_sets (collection, recipient_id, set_id, preferences, updated_at)
                 VALUES ('', 'dana', 'default', '{}', 'now'), ('', 'dana', 'acme', '{}', 'now');
                 INSERT INTO tenants (id, created_at, updated_at) VALUES ('acme', 'now', 'now');",
            )?;
            Ok::<_, Error>(())
        })
        .expect("writes");
        let after = counts().0;
        assert_eq!(
            (
                after.users,
                after.objects,
                after.tenants,
                after.preference_sets
            ),
            (300_001, 1, 1, 2)
        );
        db.write_blocking(test_origin(), |w| {
            w.conn().batch(
                "DELETE FROM recipients WHERE collection = '' AND id = 'dana';
                 DELETE FROM tenants WHERE id = 'acme';",
            )?;
            Ok::<_, Error>(())
        })
        .expect("deletes");
        let after = counts().0;
        assert_eq!(
            (
                after.users,
                after.objects,
                after.tenants,
                after.preference_sets
            ),
            (300_000, 1, 0, 0)
        );
        db.close();
    }
}
