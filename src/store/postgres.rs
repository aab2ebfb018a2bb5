//! The PostgreSQL backend's connections (fleet.md): connecting into the daemon's schema,
//! transactions, the migrations of `sql/postgres/`, the fleet-wide write lock, and the
//! listener that keeps this daemon's cache coherent with the other daemons' writes.
//!
//! Each database thread owns one [`PgConn`] (the sync `postgres` client runs its own
//! small runtime, so a plain thread owns it as it owns a SQLite connection; it never runs
//! on the daemon's async workers). Statements are prepared once per connection
//! ([`Prepared`]).
//!
//! **Writes are serialised fleet-wide.** Every write transaction takes one advisory
//! transaction lock, derived from the schema, right after `BEGIN`, and holds it to the
//! commit. That gives the fleet what the single SQLite writer gives one daemon: a
//! read-modify-write (a merge, an identify, a membership change, a bulk chunk reading its
//! job's offset) sees every earlier commit and cannot interleave with another daemon's,
//! so no update is lost; and change `seq`s, drawn inside the lock, are in commit order,
//! so a reader of the log that has seen `seq` n can never later find a smaller one
//! commit (PostgreSQL hands out identity values at insert, not at commit; the lock is
//! what makes the log commit-ordered). The cost is that writes of the whole fleet commit
//! one at a time — measured in the README; writes are rare next to reads, which the
//! caches take.
//!
//! **Round trips.** On one machine a round trip to PostgreSQL costs about as much as a
//! small statement, so a write counts them: a bulk chunk makes 7 (`BEGIN` and the lock,
//! the claim answering the job, the sets, the value, the change-log append reading the
//! newest `at` itself, the advance answering the job, and the `NOTIFY`s in the `COMMIT`'s
//! batch), 13 before. Measured with the server's statement log during `cargo bench
//! --bench fleet -- --quick --bulk` (`log_min_duration_statement = 0`): per chunk of 250
//! users the sets statement takes 2.5–3.5 ms and the append 1.3–2 ms; the 1000-user job
//! stays 2.0–2.9× a raw upsert of its rows (README, performance).

use std::time::Duration;

use super::Error;
use super::sql::{Param, Prepared, Row, postgres_row};
use crate::config::Durability;

/// Where the PostgreSQL store is: `[store] url` and `schema`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// A `postgres://` URL or a libpq key=value string.
    pub url: String,
    /// The schema holding this environment's tables (created if missing).
    pub schema: String,
}

/// The oldest PostgreSQL the backend runs on (fleet.md §1).
const MIN_SERVER_VERSION: i64 = 150_000;

/// Every migration of the PostgreSQL schema, in order (append-only, like `sql/`).
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../sql/postgres/0001_init.sql"),
    ),
    (
        "0002_inline_change_values",
        include_str!("../../sql/postgres/0002_inline_change_values.sql"),
    ),
    (
        "0003_cheaper_bulk_writes",
        include_str!("../../sql/postgres/0003_cheaper_bulk_writes.sql"),
    ),
    (
        "0004_set_change_chains",
        include_str!("../../sql/postgres/0004_set_change_chains.sql"),
    ),
];

/// The schema version this build writes on PostgreSQL.
pub fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// One connection into the daemon's schema, with its prepared statements.
pub struct PgConn {
    client: postgres::Client,
    prepared: Prepared,
    options: PgOptions,
    durability: Durability,
    /// The advisory lock keys and the notification channel, derived from the schema.
    pub keys: Keys,
    /// The `NOTIFY`s of the open write transaction, as (channel, payload): sent with its
    /// `COMMIT` ([`PgConn::commit`]), in the same round trip.
    notifications: Vec<(String, String)>,
}

/// What is shared per database but must be per schema: derived from the schema's name,
/// so that daemons of different schemas never hear or wait for each other.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The advisory lock every write transaction holds (see the module's doc).
    pub write_lock: i64,
    /// The advisory lock migrations run under.
    pub migrate_lock: i64,
    /// `NOTIFY` channel of the change log: the payload is the newest `seq` committed.
    pub changes_channel: String,
    /// `NOTIFY` channel of the job table: the payload is the id of a job queued or moved on.
    pub jobs_channel: String,
}

impl Keys {
    fn of(schema: &str) -> Keys {
        let digest = crate::model::change::sha256(schema.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let base = i64::from_be_bytes(first);
        // The channel is an identifier (at most 63 bytes): a hash of the schema, not its
        // name, which may be long or need quoting.
        let tag = crate::model::change::hex(&digest[..8]);
        Keys {
            write_lock: base ^ 0x7072_6566_7364_0001,
            migrate_lock: base ^ 0x7072_6566_7364_0002,
            changes_channel: format!("prefsd_changes_{tag}"),
            jobs_channel: format!("prefsd_jobs_{tag}"),
        }
    }
}

/// `'text'`, with any `'` doubled: a string literal PostgreSQL reads as written
/// (`standard_conforming_strings`, on since PostgreSQL 9.1, leaves backslashes alone).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"name"`, with any `"` doubled: an identifier PostgreSQL reads as written.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PgConn {
    /// Connects, sets the schema as the search path and the durability of commits.
    pub fn connect(options: &PgOptions, durability: Durability) -> Result<PgConn, Error> {
        let mut config: postgres::Config = options
            .url
            .parse()
            .map_err(|e: postgres::Error| Error::Config(format!("[store] url: {e}")))?;
        config
            .application_name("prefsd")
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        let client = config
            .connect(postgres::NoTls)
            .map_err(Error::Unavailable)?;
        let mut conn = PgConn {
            client,
            prepared: Prepared::default(),
            options: options.clone(),
            durability,
            keys: Keys::of(&options.schema),
            notifications: Vec::new(),
        };
        conn.configure()?;
        Ok(conn)
    }

    fn configure(&mut self) -> Result<(), Error> {
        let synchronous = match self.durability {
            Durability::Full => "on",
            Durability::Normal => "off",
        };
        self.client.batch_execute(&format!(
            "SET search_path TO {}; SET synchronous_commit TO {synchronous};",
            quote_ident(&self.options.schema)
        ))?;
        Ok(())
    }

    /// Connects again after the connection was lost; prepared statements start over.
    pub fn reconnect(&mut self) -> Result<(), Error> {
        let fresh = PgConn::connect(&self.options, self.durability)?;
        *self = fresh;
        Ok(())
    }

    /// True once the connection has been lost (the next job reconnects first).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize, Error> {
        let stmt = self.prepared.get(&mut self.client, sql)?;
        let refs = refs(params);
        Ok(self.client.execute(&stmt, &refs)? as usize)
    }

    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Error> {
        let stmt = self.prepared.get(&mut self.client, sql)?;
        let refs = refs(params);
        self.client
            .query(&stmt, &refs)?
            .iter()
            .map(postgres_row)
            .collect()
    }

    /// A statement in PostgreSQL's text with typed parameters (see `Conn::pg_query`).
    pub fn query_typed(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let stmt = self.prepared.get(&mut self.client, sql)?;
        self.client
            .query(&stmt, params)?
            .iter()
            .map(postgres_row)
            .collect()
    }

    pub fn batch(&mut self, sql: &str) -> Result<(), Error> {
        Ok(self.client.batch_execute(sql)?)
    }

    /// Starts a read transaction: one snapshot for all its statements.
    pub fn begin_read(&mut self) -> Result<(), Error> {
        self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    }

    /// Starts a write transaction and takes the fleet's write lock (see the module doc).
    pub fn begin_write(&mut self) -> Result<(), Error> {
        self.notifications.clear();
        self.batch(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({});",
            self.keys.write_lock
        ))
    }

    /// Queues a `NOTIFY` on `channel` for the commit of the open write transaction.
    /// PostgreSQL delivers a notification only at its transaction's commit anyway; sent
    /// with the `COMMIT` it costs no round trip of its own (a bulk chunk sends two).
    pub fn notify(&mut self, channel: &str, payload: &str) {
        self.notifications
            .push((channel.to_string(), payload.to_string()));
    }

    /// Commits, with the queued notifications in the same batch (one round trip). A lost
    /// connection here leaves the outcome unknown: the caller is told the store is
    /// unavailable, and the write may or may not have been applied.
    pub fn commit(&mut self) -> Result<(), Error> {
        let mut batch = String::new();
        for (channel, payload) in self.notifications.drain(..) {
            batch.push_str(&format!(
                "SELECT pg_notify({}, {});",
                quote_literal(&channel),
                quote_literal(&payload)
            ));
        }
        batch.push_str("COMMIT");
        self.batch(&batch)
    }

    /// Ends a transaction without keeping anything; errors are moot (a lost connection
    /// rolls back by itself).
    pub fn rollback(&mut self) {
        self.notifications.clear();
        if !self.client.is_closed() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    /// The server's version, as `server_version_num` (150004 for 15.4).
    fn server_version(&mut self) -> Result<i64, Error> {
        let text: String = self
            .client
            .query_one("SELECT current_setting('server_version_num')", &[])?
            .try_get(0)?;
        text.parse()
            .map_err(|_| Error::Decode(format!("server_version_num {text:?}")))
    }

    /// Creates the schema if needed and applies the pending migrations, all in one
    /// transaction under an advisory lock, so daemons starting together never race and a
    /// failure leaves the old version. Refuses a server older than 15 and a schema newer
    /// than this build. Answers the version in force.
    pub fn migrate(&mut self) -> Result<u32, Error> {
        let version = self.server_version()?;
        if version < MIN_SERVER_VERSION {
            return Err(Error::Config(format!(
                "PostgreSQL {version} is too old; prefsd needs PostgreSQL 15 or newer"
            )));
        }
        let schema = quote_ident(&self.options.schema);
        let mut tx = self.client.transaction()?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({});
             CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.prefsd_schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             );",
            self.keys.migrate_lock
        ))?;
        let current: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {schema}.prefsd_schema_migrations"),
                &[],
            )?
            .try_get(0)?;
        let current = u32::try_from(current).unwrap_or(0);
        if current > latest() {
            return Err(Error::TooNew {
                found: current,
                known: latest(),
            });
        }
        for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).map_err(|source| Error::PgMigration {
                name: (*name).to_string(),
                source,
            })?;
            let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.prefsd_schema_migrations (version, name) VALUES ($1, $2)"
                ),
                &[&version, name],
            )?;
        }
        tx.commit()?;
        self.prepared.clear();
        Ok(latest())
    }

    /// `LISTEN` on the change log's and the job table's channels (the listener's
    /// connection).
    pub fn listen(&mut self) -> Result<(), Error> {
        let sql = format!(
            "LISTEN {}; LISTEN {};",
            self.keys.changes_channel, self.keys.jobs_channel
        );
        self.batch(&sql)
    }

    /// Waits up to `timeout` for notifications; answers the ids of the jobs notified (the
    /// change log's notifications are only wake-ups: the log is read for what changed).
    pub fn wait_for_notifications(&mut self, timeout: Duration) -> Result<Vec<String>, Error> {
        use postgres::fallible_iterator::FallibleIterator as _;
        let jobs_channel = self.keys.jobs_channel.clone();
        let mut notifications = self.client.notifications();
        let mut jobs = Vec::new();
        let mut note = |n: postgres::Notification| {
            if n.channel() == jobs_channel && !jobs.iter().any(|j| j == n.payload()) {
                jobs.push(n.payload().to_string());
            }
        };
        if let Some(n) = notifications.timeout_iter(timeout).next()? {
            note(n);
        }
        // Whatever else has arrived meanwhile is covered by the same read of the log.
        let mut rest = notifications.iter();
        while let Some(n) = rest.next()? {
            note(n);
        }
        Ok(jobs)
    }
}

fn refs<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// True for the errors that mean the server cannot be reached or is going away: a closed
/// connection, an I/O error, SQLSTATE class 08 (connection exception) and 57P01–57P03
/// (shutdown, crash, not accepting connections yet).
pub fn is_connection_error(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner.is::<std::io::Error>() {
            return true;
        }
        source = inner.source();
    }
    false
}

/// Drops what changed from the cache (and moves its generation on).
pub type Invalidate = Box<dyn Fn(&[super::Touched]) + Send>;

/// What the listener tells the rest of the daemon.
pub struct ListenerHooks {
    pub invalidate: Invalidate,
    /// The newest `seq` seen committed anywhere in the fleet.
    pub head: Box<dyn Fn(i64) + Send>,
    /// The feed is lost (`false`: stop trusting the cache) or caught up again (`true`).
    pub coherent: Box<dyn Fn(bool) + Send>,
    /// A job was queued or moved on (its id), by any daemon; also called with `None` on
    /// every reconnect, since notifications may have been missed meanwhile.
    pub job: Box<dyn Fn(Option<String>) + Send>,
}

/// The listener thread: it follows the change log of the whole fleet and drops from this
/// daemon's cache every recipient and tenant another daemon changed (fleet.md §3).
///
/// `NOTIFY` is only a wake-up; the log, read by `seq` from the last one applied, says what
/// changed, so a notification lost or merged with others loses nothing. The log is
/// commit-ordered (see the module doc), so no change with a smaller `seq` can commit after
/// one that was read. Each wait also ends after a heartbeat (a quarter of
/// `max_staleness_ms`), when the log is read again: that read is the liveness check of the
/// connection (a dead one fails it), and it bounds staleness even if a notification never
/// came. A lost connection makes the daemon stop trusting its cache until the listener
/// has reconnected, listened again and caught up.
pub fn spawn_listener(
    options: PgOptions,
    durability: Durability,
    applied: i64,
    max_staleness: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hooks: ListenerHooks,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("prefsd-db-listener".into())
        .spawn(move || {
            let mut listener = Listener {
                options,
                durability,
                applied,
                heartbeat: (max_staleness / 4).max(Duration::from_millis(10)),
                stop,
                hooks,
                reconnects: 0,
            };
            listener.run();
        })
}

struct Listener {
    options: PgOptions,
    durability: Durability,
    applied: i64,
    heartbeat: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hooks: ListenerHooks,
    reconnects: u64,
}

/// Changes read per statement when catching up.
const CATCH_UP_BATCH: i64 = 1000;

impl Listener {
    fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn run(&mut self) {
        let mut backoff = Duration::from_millis(50);
        // Each transition is logged once: lost, then back.
        let mut lost = false;
        while !self.stopping() {
            let result = self.follow(&mut lost, &mut backoff);
            if result.is_ok() {
                return;
            }
            (self.hooks.coherent)(false);
            if let Err(e) = result
                && !lost
            {
                tracing::warn!(
                    error = %e,
                    "lost the change feed from PostgreSQL; reads bypass the cache until it is back"
                );
                lost = true;
            }
            // Back off before connecting again, up to 5 s (fleet.md §5), in steps short
            // enough to notice a shutdown.
            let until = std::time::Instant::now() + backoff;
            while std::time::Instant::now() < until && !self.stopping() {
                std::thread::sleep(Duration::from_millis(25));
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            self.reconnects += 1;
        }
    }

    /// Connects, listens, catches up, then follows until an error or the stop.
    fn follow(&mut self, lost: &mut bool, backoff: &mut Duration) -> Result<(), Error> {
        let mut conn = PgConn::connect(&self.options, self.durability)?;
        // LISTEN first: a change committed during the catch-up then wakes us too.
        conn.listen()?;
        self.catch_up(&mut conn)?;
        (self.hooks.coherent)(true);
        (self.hooks.job)(None);
        if *lost {
            tracing::info!("the change feed from PostgreSQL is back; the cache is caught up");
            *lost = false;
        }
        *backoff = Duration::from_millis(50);
        while !self.stopping() {
            let jobs = conn.wait_for_notifications(self.heartbeat)?;
            self.catch_up(&mut conn)?;
            for job in jobs {
                (self.hooks.job)(Some(job));
            }
        }
        Ok(())
    }

    /// Applies every change after `applied`: drops its keys from the cache.
    fn catch_up(&mut self, conn: &mut PgConn) -> Result<(), Error> {
        loop {
            let rows = conn.query(
                "SELECT seq, collection, recipient_id, tenant FROM changes
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                super::sql::params![self.applied, CATCH_UP_BATCH],
            )?;
            let count = rows.len();
            if count == 0 {
                return Ok(());
            }
            let mut touched = Vec::with_capacity(rows.len());
            let mut newest = self.applied;
            for mut row in rows {
                let seq: i64 = row.get(0)?;
                let collection: Option<String> = row.get(1)?;
                let id: Option<String> = row.get(2)?;
                let tenant: Option<String> = row.get(3)?;
                if let (Some(collection), Some(id)) = (collection, id) {
                    touched.push(super::Touched::Recipient(super::repo::key_from(
                        collection, id,
                    )));
                }
                if let Some(tenant) = tenant {
                    touched.push(super::Touched::Tenant(tenant));
                }
                newest = newest.max(seq);
            }
            (self.hooks.invalidate)(&touched);
            self.applied = newest;
            (self.hooks.head)(newest);
            if (count as i64) < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }
}
