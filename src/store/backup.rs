//! Online backup and offline restore of the SQLite store (ops.md §6).
//!
//! A backup copies the pages of one read snapshot with SQLite's online backup API, on a
//! connection and a thread of its own: in WAL mode a reader never blocks the writer, so
//! writes go on throughout, and the snapshot is held across the steps (one read
//! transaction), so no write restarts the copy. The copy is written under a temporary name
//! beside the destination (mode 0600), turned into a self-contained rollback-journal file,
//! checked with `PRAGMA integrity_check`, fsynced, then renamed into place: a destination
//! either keeps its old file or holds a verified backup, never a partial one. A file it
//! replaces is emptied in steps afterwards, not freed at once ([`shrink_gently`]).
//!
//! The backup's thread runs at a lower CPU and I/O priority (`sched::background`), gives
//! way after every few milliseconds of work ([`Pace`]), and writes its copy out as it goes
//! without a journal commit per piece ([`SYNC_EVERY_PAGES`]): the daemon's calls, writes
//! with their fsync above all, come first.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::lock::{DbLock, LockError, with_suffix};

/// Pages copied per step: 1 MiB of 4 KiB pages, so cancellation is noticed within a few
/// milliseconds.
const STEP_PAGES: i32 = 256;

/// Copied pages are written out to disk every this many (1 MiB, every step), so the
/// page cache never holds much of the copy for a commit's fsync to wait behind (a backup
/// left to flush 800 MB at the end held every commit behind it for seconds; every 16 MiB,
/// a commit waited for up to 16 MiB). They are written out with `sync_file_range`
/// (`sched::write_out`), not `fdatasync`: each `fdatasync` of the growing copy also
/// committed ext4's journal and flushed the disk's cache, some 1 900 times for a 1.9 GB
/// store, and the daemon's commits queued behind them; the copy is fsynced once, whole,
/// before it is renamed into place. On the 1 M-user database (1.9 GB) the copy took 9-10 s
/// instead of 15 s on a quiet machine.
const SYNC_EVERY_PAGES: i32 = STEP_PAGES;

/// A backup gives way to the daemon's own work: after every [`Pace::SLICE`] of copying or
/// checking it sleeps as long as it ran, so it takes at most half of a core and of the
/// disk, and commits (which fsync) do not queue behind a stream of its writes. Measured on
/// the 1M-user database (README, "Backups and moving data"): without it, writes' p99
/// during a backup was about 4x of without. The slice is short because a call that finds
/// a core taken by the check waits for up to one slice: with 20 ms, the calls during the
/// `integrity_check` took 10-18 ms where they took 2-5 ms without a backup; with 5 ms,
/// writes during the check had a p90 of 2.6-2.9 ms and a p99 of 4.3-4.5 ms (0.85 and 1.2
/// ms without a backup); with 1 ms, 1.4-1.5 and 2.2-2.4 ms; and with the writer thread
/// asking for short scheduler slices too (`store::writer`), 0.46-0.65 and 1.6-3.2 ms,
/// at a p99 of 4.1 ms without a backup in the same minute.
struct Pace {
    since: Instant,
}

impl Pace {
    const SLICE: Duration = Duration::from_millis(1);

    fn new() -> Pace {
        Pace {
            since: Instant::now(),
        }
    }

    fn give_way(&mut self) {
        let ran = self.since.elapsed();
        if ran >= Pace::SLICE {
            std::thread::sleep(ran);
            self.since = Instant::now();
        }
    }
}

/// What a backup holds, as `daemon.backup` answers it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupInfo {
    pub path: PathBuf,
    pub bytes: u64,
    /// The newest change the copy contains (`None` before any change was recorded).
    pub seq: Option<i64>,
    /// When the copy was made (its snapshot), RFC 3339 UTC.
    pub at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("sqlite: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        source: std::io::Error,
    },
    #[error("{} is not a usable prefsd database: {reason}", .path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("the backup was cancelled (the daemon is stopping)")]
    Cancelled,
    #[error("the backup thread stopped before it answered")]
    Thread,
}

fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let doing = doing.into();
    move |source| BackupError::Io { doing, source }
}

/// Copies the live database at `database` into `dest` on a thread of its own; `cancel`
/// (set when the daemon stops) ends it between steps, leaving `dest` as it was.
pub async fn backup(
    database: PathBuf,
    dest: PathBuf,
    cancel: CancellationToken,
) -> Result<BackupInfo, BackupError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("prefsd-backup".into())
        .spawn(move || {
            // The copy and its check are the work that waits: calls come first.
            crate::sched::background();
            let _ = tx.send(backup_blocking(&database, &dest, &cancel));
        })
        .map_err(io("starting the backup thread"))?;
    rx.await.map_err(|_| BackupError::Thread)?
}

/// The blocking body of [`backup`].
pub fn backup_blocking(
    database: &Path,
    dest: &Path,
    cancel: &CancellationToken,
) -> Result<BackupInfo, BackupError> {
    let tmp = temp_beside(dest, "backup");
    let started = Instant::now();
    let result = copy_snapshot(database, &tmp, cancel).and_then(|at| {
        // Each phase's length, for an operator who sees writes slow during a backup.
        let copied = started.elapsed();
        tracing::info!(seconds = copied.as_secs_f64(), "backup: snapshot copied");
        let info = verify_paced(&tmp, Some(cancel))?;
        let checked = started.elapsed();
        tracing::info!(
            seconds = (checked - copied).as_secs_f64(),
            "backup: copy checked"
        );
        if cancel.is_cancelled() {
            return Err(BackupError::Cancelled);
        }
        place(&tmp, dest)?;
        tracing::info!(
            seconds = (started.elapsed() - checked).as_secs_f64(),
            "backup: copy synced and renamed into place"
        );
        Ok(BackupInfo {
            path: dest.to_path_buf(),
            bytes: info.bytes,
            seq: info.seq,
            at,
        })
    });
    if result.is_err() {
        // A cancelled copy may be most of the database's size.
        let _ = remove_gently(&tmp);
    }
    result
}

/// Copies one snapshot of `database` into the new file `tmp`; answers the snapshot's time.
fn copy_snapshot(
    database: &Path,
    tmp: &Path,
    cancel: &CancellationToken,
) -> Result<String, BackupError> {
    create_private(tmp)?;
    let src = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(5))?;
    // The read transaction stays open across the steps: the copy is of this one snapshot,
    // and writes by the daemon meanwhile neither block it nor restart it.
    src.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")?;
    let at = super::time::now();
    let mut dst = Connection::open(tmp)?;
    // The copy is fsynced once, when complete; a crash before that leaves only a temporary
    // file, which is not the backup.
    dst.execute_batch("PRAGMA synchronous = OFF; PRAGMA journal_mode = OFF;")?;
    {
        // The destination's pages reach the file as its page cache spills; written out
        // through a descriptor of our own as they go (any descriptor of the file will do).
        let flush = File::open(tmp).map_err(io(format!("opening {}", tmp.display())))?;
        let mut unsynced = 0;
        let mut pace = Pace::new();
        let backup = Backup::new(&src, &mut dst)?;
        loop {
            if cancel.is_cancelled() {
                return Err(BackupError::Cancelled);
            }
            match backup.step(STEP_PAGES)? {
                StepResult::Done => break,
                StepResult::More => {}
                // The destination is ours alone and the source only reads; a lock is brief.
                StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
            unsynced += STEP_PAGES;
            if unsynced >= SYNC_EVERY_PAGES {
                crate::sched::write_out(&flush)
                    .map_err(io(format!("writing {} out", tmp.display())))?;
                unsynced = 0;
            }
            pace.give_way();
        }
    }
    src.execute_batch("COMMIT")?;
    // The pages say WAL mode, as the source's do; a backup is one self-contained file.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
    drop(dst);
    Ok(at)
}

/// What [`verify`] found in a database file.
#[derive(Clone, Debug)]
pub struct Verified {
    pub bytes: u64,
    pub seq: Option<i64>,
    pub schema_version: u32,
}

/// Checks that `path` is a whole prefsd database this build can open: `PRAGMA
/// integrity_check` passes and its schema version is known. Opens it read-only.
pub fn verify(path: &Path) -> Result<Verified, BackupError> {
    verify_paced(path, None)
}

/// [`verify`]; with `cancel`, the check gives way as a backup's copy does ([`Pace`]) and
/// stops when cancelled.
fn verify_paced(path: &Path, cancel: Option<&CancellationToken>) -> Result<Verified, BackupError> {
    let unusable = |reason: String| BackupError::Unusable {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::metadata(path)
        .map_err(|e| unusable(e.to_string()))?
        .len();
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unusable(e.to_string()))?;
    if let Some(cancel) = cancel {
        let cancel = cancel.clone();
        let mut pace = Pace::new();
        // Called every 10 000 virtual machine steps; true interrupts the check.
        conn.progress_handler(
            10_000,
            Some(move || {
                pace.give_way();
                cancel.is_cancelled()
            }),
        )?;
    }
    // A small page cache: the check reads every page once.
    let checked: Result<Vec<String>, rusqlite::Error> = conn
        .execute_batch("PRAGMA cache_size = -2048")
        .and_then(|()| {
            let mut stmt = conn.prepare("PRAGMA integrity_check(3)")?;
            stmt.query_map([], |r| r.get(0))?.collect()
        });
    match checked {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {}
        Ok(rows) => return Err(unusable(format!("integrity_check: {}", rows.join("; ")))),
        Err(e) => return Err(unusable(e.to_string())),
    }
    let schema_version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = super::migrate::latest();
    if schema_version == 0 {
        return Err(unusable("it has no prefsd schema".into()));
    }
    if schema_version > known {
        return Err(unusable(format!(
            "its schema version {schema_version} is newer than this prefsd knows ({known})"
        )));
    }
    Ok(Verified {
        bytes,
        seq: newest_seq(&conn)?,
        schema_version,
    })
}

/// The newest change `seq` a database holds (history.md), `None` when it has no change
/// log or no change yet. Erased and pruned changes count, so a backup's seq is the log's
/// head as the daemon answers it (`store::log::NEWEST_EVER`), on a connection of a file
/// that may be older than the change log (schema version 3).
pub(super) fn newest_seq(conn: &Connection) -> Result<Option<i64>, rusqlite::Error> {
    let has_log: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'changes'",
        [],
        |r| r.get(0),
    )?;
    if !has_log {
        return Ok(None);
    }
    conn.query_row(super::log::NEWEST_EVER, [], |r| r.get(0))
}

/// What `prefsd restore` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Restored {
    pub database: PathBuf,
    pub from: PathBuf,
    pub bytes: u64,
    pub seq: Option<i64>,
    /// Where the replaced database went, if there was one.
    pub before_restore: Option<PathBuf>,
}

/// Replaces the database at `database` with the backup at `from`, offline: refused while a
/// daemon holds `database` (its lock is held here throughout, so none starts meanwhile)
/// and unless `from` verifies; the replaced file is kept as `PATH.before-restore`.
pub fn restore(from: &Path, database: &Path) -> Result<Restored, BackupError> {
    let _lock = DbLock::acquire(database)?;
    let verified = verify(from)?;
    let tmp = temp_beside(database, "restore");
    let result = restore_locked(from, database, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let before_restore = result?;
    Ok(Restored {
        database: database.to_path_buf(),
        from: from.to_path_buf(),
        bytes: verified.bytes,
        seq: verified.seq,
        before_restore,
    })
}

fn restore_locked(
    from: &Path,
    database: &Path,
    tmp: &Path,
) -> Result<Option<PathBuf>, BackupError> {
    {
        let mut out = create_private(tmp)?;
        let mut input = File::open(from).map_err(io(format!("reading {}", from.display())))?;
        std::io::copy(&mut input, &mut out).map_err(io(format!("writing {}", tmp.display())))?;
        out.sync_all()
            .map_err(io(format!("syncing {}", tmp.display())))?;
    }
    let before = if database.exists() {
        // Writes a daemon left in the WAL belong to the file being replaced: copied back
        // into it, so that `.before-restore` is whole and no WAL is left beside the
        // restored file (SQLite would apply it to the wrong database).
        let conn = Connection::open(database)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
        drop(conn);
        let before = with_suffix(database, ".before-restore");
        std::fs::rename(database, &before).map_err(io(format!(
            "moving {} to {}",
            database.display(),
            before.display()
        )))?;
        Some(before)
    } else {
        None
    };
    for leftover in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(database, leftover));
    }
    place(tmp, database)?;
    Ok(before)
}

/// Creates `path` anew with mode 0600: backups hold people's properties and choices.
fn create_private(path: &Path) -> Result<File, BackupError> {
    let _ = std::fs::remove_file(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("creating {}", path.display())))
}

/// Fsyncs `tmp`, renames it to `dest` and fsyncs the directory, so the rename survives a
/// crash too. A file `dest` replaces is emptied in steps afterwards ([`shrink_gently`]),
/// not freed by the rename.
fn place(tmp: &Path, dest: &Path) -> Result<(), BackupError> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing {}", tmp.display())))?;
    // Held open, the replaced file outlives its name: the rename only unlinks it.
    let replaced = OpenOptions::new().write(true).open(dest).ok();
    std::fs::rename(tmp, dest).map_err(io(format!(
        "renaming {} to {}",
        tmp.display(),
        dest.display()
    )))?;
    sync_dir(dest)?;
    if let Some(replaced) = replaced
        && let Err(e) = shrink_if_unlinked(&replaced)
    {
        // The new backup is in place; the old one's space comes back when it is closed.
        tracing::warn!(path = %dest.display(), error = %e, "emptying the replaced backup");
    }
    Ok(())
}

/// Fsyncs the directory that holds `path`, so that a rename or unlink in it is durable.
fn sync_dir(path: &Path) -> Result<(), BackupError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing the directory {}", dir.display())))
}

/// How much of a file [`shrink_gently`] gives back per step.
const SHRINK_STEP: u64 = 64 << 20;

/// The least a step of [`shrink_gently`] waits before the next.
const SHRINK_PAUSE: Duration = Duration::from_millis(20);

/// Removes `path` (a backup, or a partial copy) without stalling the daemon's commits: the
/// file is unlinked while held open, then emptied in steps ([`shrink_gently`]). A crash
/// midway leaves no file behind: the kernel frees an unlinked file when it is closed, or
/// at the next mount.
pub fn remove_gently(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    std::fs::remove_file(path)?;
    shrink_if_unlinked(&file)
}

/// [`shrink_gently`], only if `file` has no name left: a symlink's target or a file with
/// another hard link was not removed, and keeps its content.
fn shrink_if_unlinked(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    if file.metadata()?.nlink() == 0 {
        shrink_gently(file)?;
    }
    Ok(())
}

/// Gives a file's space back [`SHRINK_STEP`] at a time, each step committed (`fdatasync`)
/// and followed by a pause as long as it took (at least [`SHRINK_PAUSE`]).
///
/// Freeing a whole 1.9 GB backup at once (an `unlink`, or a `rename` over it) held ext4's
/// journal for about half a second, on a disk mounted with `discard` also trimming all of
/// it in one commit, and every commit of the daemon waited behind it: on the 1 M-user
/// database, writes' p99 during a backup that replaced an older one had its largest calls
/// (200-350 ms, against 5-60 ms otherwise) in that half second. In 64 MiB steps the worst
/// step took 41 ms and no write stood out.
fn shrink_gently(file: &File) -> std::io::Result<()> {
    let mut size = file.metadata()?.len();
    while size > 0 {
        let started = Instant::now();
        size = size.saturating_sub(SHRINK_STEP);
        file.set_len(size)?;
        file.sync_data()?;
        std::thread::sleep(started.elapsed().max(SHRINK_PAUSE));
    }
    Ok(())
}

/// `.NAME.WHAT-PID-N` beside `path`: hidden, and one per process and call.
pub fn temp_beside(path: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{newest_seq, remove_gently, verify};

    #[test]
    fn removing_gently_empties_the_file_and_spares_a_symlinks_target() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old.db");
        // Two steps and a piece of a third.
        std::fs::write(&path, vec![7u8; (super::SHRINK_STEP * 2 + 4096) as usize]).expect("write");
        let held = std::fs::File::open(&path).expect("open");
        remove_gently(&path).expect("removed");
        assert!(!path.exists());
        assert_eq!(held.metadata().expect("fstat").len(), 0, "emptied");

        let target = dir.path().join("target.db");
        std::fs::write(&target, b"kept").expect("write");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        remove_gently(&link).expect("removed");
        assert!(!link.exists());
        assert_eq!(std::fs::read(&target).expect("the target"), b"kept");
    }

    #[test]
    fn the_seq_of_a_database_is_its_change_logs_newest_or_none() {
        use crate::store::migrate::MIGRATIONS;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.db");
        let conn = Connection::open(&path).expect("open");
        assert_eq!(newest_seq(&conn).expect("seq"), None, "no tables at all");
        let apply = |range: std::ops::Range<usize>| {
            for (name, sql) in &MIGRATIONS[range.clone()] {
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            conn.execute_batch(&format!("PRAGMA user_version = {}", range.end))
                .expect("version");
        };
        // Schema version 2: the jobs' AUTOINCREMENT is not the change log.
        apply(0..2);
        conn.execute_batch("INSERT INTO sqlite_sequence (name, seq) VALUES ('bulk_operations', 9)")
            .expect("a job's seq");
        assert_eq!(newest_seq(&conn).expect("seq"), None, "no change log");
        let change = |seq: &str| {
            conn.execute_batch(&format!(
                "INSERT INTO changes (seq, at, kind, actor, method)
                 VALUES ({seq}, 0, 'config.applied', '{{}}', 'config')"
            ))
            .expect("a change");
        };
        // Versions 3-6: AUTOINCREMENT numbered the changes.
        apply(2..6);
        assert_eq!(newest_seq(&conn).expect("seq"), None, "no change yet");
        change("NULL");
        change("NULL");
        assert_eq!(newest_seq(&conn).expect("seq"), Some(2));
        // An erased newest change still counts: seq never goes back.
        conn.execute_batch("DELETE FROM changes WHERE seq = 2")
            .expect("erase");
        assert_eq!(newest_seq(&conn).expect("seq"), Some(2));
        // Version 7: the writer numbers them; pruning's mark counts too.
        apply(6..7);
        change("3");
        assert_eq!(newest_seq(&conn).expect("seq"), Some(3));
        conn.execute_batch(
            "DELETE FROM changes WHERE seq = 3;
             INSERT INTO change_log_state (id, pruned_seq, pruned_at) VALUES (1, 5, 0);",
        )
        .expect("prune");
        assert_eq!(newest_seq(&conn).expect("seq"), Some(5));
        drop(conn);
        assert_eq!(verify(&path).expect("verifies").seq, Some(5));
    }
}
