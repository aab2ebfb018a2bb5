//! The watcher that reloads the live config (`live`) when the directory changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use notify::RecursiveMode;
use notify::event::{EventKind, ModifyKind};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, new_debouncer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::is_temp_name;
use super::live::{ConfigHandle, Mode};

/// How long the directory must be quiet before a burst of events becomes one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the config directory of `handle` and reloads on every change until `cancel`
/// fires. Equivalent to [`ConfigWatcher::start`] then [`ConfigWatcher::run`].
pub async fn watch(handle: ConfigHandle, cancel: CancellationToken) -> anyhow::Result<()> {
    ConfigWatcher::start(handle)?.run(cancel).await
}

/// A started watch on the config directory. [`ConfigWatcher::start`] returns once the
/// directory is watched, so no change made after it is missed.
pub struct ConfigWatcher {
    handle: ConfigHandle,
    debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    changed: mpsc::Receiver<()>,
    root: Arc<Root>,
    /// The parent directory, while it is watched for the config directory to come back.
    parent: Option<PathBuf>,
}

/// The config directory as the watcher names it in events (absolute), and whether the
/// event handler saw the directory itself move, go or appear: the watch then follows the
/// path again ([`ConfigWatcher::rewatch`]), since an inotify watch follows the directory
/// it was put on wherever that is renamed to.
struct Root {
    path: PathBuf,
    moved: AtomicBool,
}

impl ConfigWatcher {
    /// Watches `handle.dir()` recursively (so that `tenants/` and editors that save by
    /// renaming a temporary file over the original are seen), debounced.
    pub fn start(handle: ConfigHandle) -> anyhow::Result<ConfigWatcher> {
        // One pending signal is enough: a reload reads the whole directory.
        let (tx, changed) = mpsc::channel::<()>(1);
        let root = Arc::new(Root {
            path: std::path::absolute(handle.dir()).context("cannot name the config directory")?,
            moved: AtomicBool::new(false),
        });
        let seen = Arc::clone(&root);
        let mut debouncer =
            new_debouncer(
                DEBOUNCE,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) => {
                        if events.iter().any(|e| is_root_moved(e, &seen.path)) {
                            seen.moved.store(true, Ordering::Release);
                            let _ = tx.try_send(());
                        } else if events.iter().any(|e| is_relevant(e, &seen.path)) {
                            let _ = tx.try_send(());
                        }
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "config watcher error");
                        }
                    }
                },
            )
            .context("cannot start the config watcher")?;
        let dir = &root.path;
        debouncer
            .watch(dir, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch the config directory {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "watching the config directory");
        Ok(ConfigWatcher {
            handle,
            debouncer,
            changed,
            root,
            parent: None,
        })
    }

    /// Puts the watch back on the config directory's path after the directory there moved
    /// or went: on the new directory if one is in place, else on the parent until one
    /// appears. Errors are logged; SIGHUP and `config.reload` still reload. The inotify
    /// calls block for the moment they take on a small directory, on the async worker: this
    /// runs only when the directory itself moved, and never per request.
    fn rewatch(&mut self) {
        let dir = self.root.path.clone();
        // The old watch is on the old directory, renamed or removed; this may fail if it
        // is already gone with it.
        let _ = self.debouncer.unwatch(&dir);
        if let Some(parent) = self.parent.take() {
            let _ = self.debouncer.unwatch(&parent);
        }
        // Twice at most: the directory may appear while the parent's watch is being set.
        for _ in 0..2 {
            if dir.is_dir() {
                match self.debouncer.watch(&dir, RecursiveMode::Recursive) {
                    Ok(()) => {
                        tracing::info!(dir = %dir.display(), "watching the new config directory");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the new config directory")
                    }
                }
            }
            let Some(parent) = dir.parent() else {
                return;
            };
            if let Err(e) = self.debouncer.watch(parent, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "the config directory is gone and its parent cannot be watched; reload with SIGHUP once it is back");
                return;
            }
            if !dir.is_dir() {
                tracing::warn!(dir = %dir.display(), "the config directory is gone; the config in force stays until it is back");
                self.parent = Some(parent.to_path_buf());
                return;
            }
            let _ = self.debouncer.unwatch(parent);
        }
    }

    /// Reloads, unless `cancel` fires first: a shutdown does not wait for a reload in
    /// progress (the blocking thread finishes it, bounded by the file size limit, and its
    /// result is dropped with the daemon).
    async fn reload_or_stop(
        &self,
        mode: Mode,
        cancel: &CancellationToken,
    ) -> std::ops::ControlFlow<()> {
        tokio::select! {
            _ = self.handle.reload_in_background(mode) => std::ops::ControlFlow::Continue(()),
            () = cancel.cancelled() => std::ops::ControlFlow::Break(()),
        }
    }

    /// Reloads on every debounced change until `cancel` fires. Refused reloads are logged
    /// and shown in the status; the loop goes on.
    ///
    /// A reload may read a change whose events are still being debounced, and the debouncer
    /// drops a file created and removed within one debounce period. So each reload is
    /// followed, once the directory has been quiet for a while, by a second look that applies
    /// the directory only if it differs from the config in force.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut second_look: Option<tokio::time::Instant> = None;
        loop {
            let look = async {
                match second_look {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                signal = self.changed.recv() => {
                    if signal.is_none() {
                        anyhow::bail!("the config watcher stopped");
                    }
                    if self.root.moved.swap(false, Ordering::AcqRel) {
                        self.rewatch();
                    }
                    // Errors are logged and recorded in the status by the reload.
                    if self.reload_or_stop(Mode::Always, &cancel).await.is_break() {
                        break;
                    }
                    second_look = Some(tokio::time::Instant::now() + 2 * DEBOUNCE);
                }
                () = look => {
                    second_look = None;
                    if self.reload_or_stop(Mode::IfChanged, &cancel).await.is_break() {
                        break;
                    }
                }
            }
        }
        // Dropping the debouncer stops the watch.
        drop(self.debouncer);
        Ok(())
    }
}

/// Whether an event can change the config: anything but reads, on a path in the config
/// directory that is not an editor temporary. Kubernetes ConfigMaps swap a `..data`
/// symlink, which counts. (While the parent is watched, its other entries do not.)
fn is_relevant(event: &DebouncedEvent, root: &Path) -> bool {
    if event.kind.is_access() {
        return false;
    }
    if event.paths.is_empty() {
        // A rescan: the watcher lost events.
        return true;
    }
    event.paths.iter().any(|path| {
        path.starts_with(root)
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|name| name == "..data" || !is_temp_name(name))
    })
}

/// Whether an event is about the config directory itself being renamed, removed or
/// created (the last seen through the parent's watch).
fn is_root_moved(event: &DebouncedEvent, root: &Path) -> bool {
    matches!(
        event.kind,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) | EventKind::Create(_)
    ) && event.paths.iter().any(|path| path == root)
}
