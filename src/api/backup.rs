//! `daemon.backup`, the scheduled backups of `[backup]`, and the last backup that
//! `daemon.status` shows (ops.md §6). The copy itself is `store::backup`'s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::api::Context;
use crate::store::backup::{BackupError, BackupInfo};

/// The newest backup this daemon made, for `daemon.status`.
#[derive(Default)]
pub struct Backups {
    last: Mutex<Option<BackupInfo>>,
}

impl Backups {
    fn record(&self, info: &BackupInfo) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(info.clone());
        }
    }

    /// When the newest backup was made (unix seconds) and its size, for `/metrics`.
    pub fn last(&self) -> Option<(f64, u64)> {
        let last = self.last.lock().ok().and_then(|l| l.clone())?;
        let at = last.at.parse::<jiff::Timestamp>().ok()?;
        Some((at.as_millisecond() as f64 / 1000.0, last.bytes))
    }

    /// `{ path, bytes, seq, at, age_s }` of the newest backup, or `null`.
    pub fn status(&self) -> Value {
        let last = self.last.lock().ok().and_then(|l| l.clone());
        match last {
            None => Value::Null,
            Some(info) => {
                let age_s = info
                    .at
                    .parse::<jiff::Timestamp>()
                    .ok()
                    .map(|at| (jiff::Timestamp::now().as_second() - at.as_second()).max(0));
                json!({
                    "path": info.path,
                    "bytes": info.bytes,
                    "seq": info.seq,
                    "at": info.at,
                    "age_s": age_s,
                })
            }
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    pub path: String,
}

/// `daemon.backup { path }`: an online, verified copy of the store at `path` (replacing a
/// file there only once the copy is verified).
/// What `daemon.backup` answers on the PostgreSQL backend (ops.md §6, issue 20 item 6).
pub const POSTGRES_BACKUPS: &str = "the store is on PostgreSQL, whose own tools back it up: \
pg_dump (or pg_basebackup with WAL archiving for point-in-time recovery), and pg_restore";

pub async fn backup(ctx: &Context, p: BackupParams) -> Result<BackupInfo, Error> {
    if ctx.db.is_postgres() {
        return Err(Error::Conflict(POSTGRES_BACKUPS.into()));
    }
    let database = ctx.config().settings.database.clone();
    let dest = destination(&p.path, &database)?;
    run(ctx, database, dest).await
}

/// Checks where a backup is to go: an absolute path (the daemon's working directory is
/// not the caller's) in a directory that exists, and not one of the database's own files.
fn destination(path: &str, database: &Path) -> Result<PathBuf, Error> {
    let dest = PathBuf::from(path);
    if path.is_empty() {
        return Err(Error::invalid("path", "must name the backup file"));
    }
    if !dest.is_absolute() {
        return Err(Error::invalid(
            "path",
            "must be an absolute path (the daemon's working directory is not the caller's)",
        ));
    }
    if path.ends_with('/') || dest.is_dir() {
        return Err(Error::invalid(
            "path",
            "is a directory; name the backup file inside it",
        ));
    }
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(Error::invalid("path", "must name the backup file"));
    };
    let Ok(parent) = parent.canonicalize() else {
        return Err(Error::invalid(
            "path",
            format!("its directory {} does not exist", parent.display()),
        ));
    };
    let dest = parent.join(name);
    let live = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .ok()
        .zip(database.file_name())
        .map(|(dir, file)| dir.join(file));
    if let Some(live) = live {
        let live = live.as_os_str().to_string_lossy().into_owned();
        let dest_text = dest.as_os_str().to_string_lossy();
        let own = ["", "-wal", "-shm", "-journal", ".lock"]
            .iter()
            .any(|suffix| dest_text == format!("{live}{suffix}"));
        if own {
            return Err(Error::invalid(
                "path",
                "is the live database or one of its files; choose another path",
            ));
        }
    }
    Ok(dest)
}

/// Makes the backup and records it; a stopping daemon cancels it.
async fn run(ctx: &Context, database: PathBuf, dest: PathBuf) -> Result<BackupInfo, Error> {
    let info = crate::store::backup::backup(database, dest.clone(), ctx.stopping.child_token())
        .await
        .map_err(|e| failed(&dest, e))?;
    tracing::info!(path = %info.path.display(), bytes = info.bytes, seq = ?info.seq, "backup written and verified");
    ctx.backups.record(&info);
    Ok(info)
}

fn failed(dest: &Path, e: BackupError) -> Error {
    tracing::error!(path = %dest.display(), error = %e, "backup failed");
    Error::Internal(format!("the backup to {} failed: {e}", dest.display()))
}

/// The prefix and suffix of scheduled backups' file names: `prefsd-<UTC time>.db`, which
/// sort in time order.
const SCHEDULED_PREFIX: &str = "prefsd-";
const SCHEDULED_SUFFIX: &str = ".db";

/// How long to wait after a scheduled backup failed before trying again (at most the
/// interval).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Scheduled backups (`[backup] dir, interval, keep`): one into `dir` whenever the newest
/// there is `interval` old (at once when there is none), then the oldest beyond `keep` are
/// removed, only after the new one is verified. Follows config reloads; ends when
/// cancelled.
pub async fn schedule(ctx: Arc<Context>, cancel: CancellationToken) {
    if ctx.db.is_postgres() {
        if ctx.config.current().settings.backup.dir.is_some() {
            tracing::warn!("[backup] is ignored: {POSTGRES_BACKUPS}");
        }
        return;
    }
    let mut configs = ctx.config.subscribe();
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let (settings, database) = {
            let config = configs.borrow_and_update();
            (
                config.settings.backup.clone(),
                config.settings.database.clone(),
            )
        };
        let due = settings.dir.as_ref().map(|dir| {
            let by_files = tokio::time::Instant::now() + due_in(dir, settings.interval);
            retry_at.map_or(by_files, |retry| retry.max(by_files))
        });
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = configs.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            () = sleep_until(due) => {}
        }
        let Some(dir) = settings.dir else { continue };
        let dest = dir.join(scheduled_name(jiff::Timestamp::now()));
        match run(&ctx, database, dest).await {
            Ok(_) => {
                retry_at = None;
                // Off the runtime: a backup is removed in steps, over seconds.
                let keep = settings.keep;
                let _ = tokio::task::spawn_blocking(move || prune(&dir, keep)).await;
            }
            Err(_) => {
                retry_at =
                    Some(tokio::time::Instant::now() + RETRY_AFTER_FAILURE.min(settings.interval));
            }
        }
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// `prefsd-20261207T043000.123Z.db` for `at`.
fn scheduled_name(at: jiff::Timestamp) -> String {
    let millis = at.as_millisecond().rem_euclid(1000);
    format!(
        "{SCHEDULED_PREFIX}{}.{millis:03}Z{SCHEDULED_SUFFIX}",
        at.strftime("%Y%m%dT%H%M%S")
    )
}

/// The scheduled backups in `dir`, oldest first.
fn scheduled_backups(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(SCHEDULED_PREFIX) && name.ends_with(SCHEDULED_SUFFIX)
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

/// How long until the next scheduled backup is due: `interval` after the newest one in
/// `dir` was written, or now.
fn due_in(dir: &Path, interval: Duration) -> Duration {
    let newest = scheduled_backups(dir)
        .last()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok());
    match newest {
        Some(written) => {
            let age = written.elapsed().unwrap_or(Duration::ZERO);
            interval.saturating_sub(age)
        }
        None => Duration::ZERO,
    }
}

/// Removes the oldest scheduled backups in `dir` beyond the newest `keep`.
fn prune(dir: &Path, keep: u32) {
    let found = scheduled_backups(dir);
    let excess = found.len().saturating_sub(keep as usize);
    for old in &found[..excess] {
        match crate::store::backup::remove_gently(old) {
            Ok(()) => tracing::info!(path = %old.display(), "removed an old scheduled backup"),
            Err(e) => {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove an old backup")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scheduled_name;

    #[test]
    fn scheduled_names_sort_in_time_order() {
        let a: jiff::Timestamp = "2026-12-07T04:30:00.120Z".parse().expect("a time");
        let b: jiff::Timestamp = "2026-12-07T04:30:01.005Z".parse().expect("a time");
        assert_eq!(scheduled_name(a), "prefsd-20261207T043000.120Z.db");
        assert!(scheduled_name(a) < scheduled_name(b));
    }
}
