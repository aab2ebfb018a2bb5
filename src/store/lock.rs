//! One daemon per database (ops.md §5): an advisory `flock` on `PATH.lock` beside the
//! database, which holds the pid of the process holding it. Two daemons on one file would
//! each trust their own read cache; an offline `prefsd restore` must not replace a file a
//! daemon has open. The lock goes with the process (the kernel drops it on exit, even on
//! `kill -9`), so a stale lock file is never a reason to refuse.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The lock on a database, held until dropped.
#[derive(Debug)]
pub struct DbLock {
    // Held open for its lock; closing the file releases it.
    _file: File,
    path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the database {database} is in use by prefsd pid {pid} (it holds {lock}); stop that daemon first, or use another database",
        database = .database.display(), lock = .lock.display(),
        pid = .pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    Held {
        database: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot lock {}: {source}", .lock.display())]
    Io {
        lock: PathBuf,
        source: std::io::Error,
    },
}

/// `PATH.lock` for the database at `PATH`.
pub fn lock_path(database: &Path) -> PathBuf {
    with_suffix(database, ".lock")
}

/// `PATH` with `suffix` appended to its file name (`prefsd.db` → `prefsd.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `database` with symlinks resolved: the file's own path, or, before it exists, its
/// directory's joined with its name.
fn resolved(database: &Path) -> PathBuf {
    if let Ok(path) = database.canonicalize() {
        return path;
    }
    let dir = match database.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (dir.canonicalize(), database.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => database.to_path_buf(),
    }
}

impl DbLock {
    /// Takes the lock on `database` without waiting, and writes this process's pid into the
    /// lock file; [`LockError::Held`] names the holder's pid when another process has it.
    pub fn acquire(database: &Path) -> Result<DbLock, LockError> {
        // Beside the file itself, so that two paths to one database (a symlink to it or
        // to its directory) meet at one lock.
        let path = lock_path(&resolved(database));
        let io = |source| LockError::Io {
            lock: path.clone(),
            source,
        };
        // Not truncated on open: until the lock is ours, the pid in it is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    database: database.to_path_buf(),
                    lock: path.clone(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DbLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::{DbLock, LockError};

    #[test]
    fn a_second_lock_on_one_database_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("prefsd.db");
        let held = DbLock::acquire(&db).expect("the first lock");
        // flock locks belong to the open file, so a second open in this process conflicts
        // as another process's would.
        match DbLock::acquire(&db) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("a second lock was not refused: {other:?}"),
        }
        drop(held);
        DbLock::acquire(&db).expect("the lock is free again once dropped");
    }
}
