//! The I/O side of the config: reading the directory, and the live config — the handle to
//! the config in force, its status, and the reload that replaces it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Serialize, Serializer};
use tokio::sync::watch;

use super::{Config, ConfigError, SETTINGS_FILE, Settings, TENANTS_DIR, is_temp_name};

/// Reads the files of a config directory: the top level and `tenants/`, skipping editor
/// temporaries, subdirectories other than `tenants/`, and files that are neither `.toml` nor
/// `.json`. Paths are relative to `dir`. A file that vanishes between listing and reading
/// (an editor's backup) is skipped; any other failure is an error naming the file.
pub fn read_dir(dir: &Path) -> io::Result<Vec<(PathBuf, String)>> {
    let (files, mut failures) = read_files(dir)?;
    match failures.pop() {
        None => Ok(files),
        Some((path, e)) => Err(io::Error::new(
            e.kind(),
            format!("{}: {e}", dir.join(path).display()),
        )),
    }
}

/// [`read_dir`] then [`Config::parse`]: a missing directory and every unreadable file are
/// errors too. The settings are as in the files: apply the overrides afterwards
/// ([`Settings::apply_overrides`]; [`ConfigHandle::new`] does it).
pub fn load_dir(dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let (files, failures) = match read_files(dir) {
        Ok(read) => read,
        Err(e) => {
            return Err(vec![ConfigError {
                file: dir.display().to_string(),
                line: None,
                message: format!("cannot read the config directory: {e}"),
            }]);
        }
    };
    let mut errors: Vec<ConfigError> = failures
        .into_iter()
        .map(|(path, e)| ConfigError {
            file: super::display_path(&path),
            line: None,
            message: format!("cannot read the file: {e}"),
        })
        .collect();
    match Config::parse_in(dir, files) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(parse_errors) => {
            errors.extend(parse_errors);
            Err(errors)
        }
    }
}

type ReadFiles = (Vec<(PathBuf, String)>, Vec<(PathBuf, io::Error)>);

/// The files read and the files that could not be read; `Err` when `dir` itself cannot be
/// listed.
fn read_files(dir: &Path) -> io::Result<ReadFiles> {
    let mut files = Vec::new();
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if is_temp_name(name) {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks (Kubernetes ConfigMaps are symlinks).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if name == TENANTS_DIR {
                read_tenants(&path, &mut files, &mut failures)?;
            }
            continue;
        }
        read_one(&path, PathBuf::from(name), &mut files, &mut failures);
    }
    Ok((files, failures))
}

fn read_tenants(
    dir: &Path,
    files: &mut Vec<(PathBuf, String)>,
    failures: &mut Vec<(PathBuf, io::Error)>,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Removed while we looked: no tenant templates.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            failures.push((PathBuf::from(TENANTS_DIR), e));
            return Ok(());
        }
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if is_temp_name(name) {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            read_one(&path, Path::new(TENANTS_DIR).join(name), files, failures);
        }
    }
    Ok(())
}

fn read_one(
    path: &Path,
    relative: PathBuf,
    files: &mut Vec<(PathBuf, String)>,
    failures: &mut Vec<(PathBuf, io::Error)>,
) {
    let wanted = relative
        .extension()
        .is_some_and(|e| e == "toml" || e == "json");
    if !wanted {
        return;
    }
    match read_bounded(path) {
        Ok(content) => files.push((relative, content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => failures.push((relative, e)),
    }
}

/// A file's text, reading at most one byte past [`super::MAX_FILE_BYTES`]: a larger file is
/// refused without being read whole into memory.
fn read_bounded(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let max = super::MAX_FILE_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file is more than {max} bytes; config files may be at most {} MiB",
                max / (1024 * 1024)
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The command-line and environment values that win over `prefsd.toml` (flag > environment,
/// already resolved by the CLI).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub database: Option<PathBuf>,
    /// `--database-url`/`PREFSD_DATABASE_URL`: the PostgreSQL backend at this URL.
    pub database_url: Option<String>,
    /// `--schema`/`PREFSD_SCHEMA`: the PostgreSQL schema.
    pub schema: Option<String>,
}

impl Overrides {
    pub fn apply(&self, settings: &mut Settings) {
        settings.apply_overrides(self.socket.clone(), self.database.clone());
        settings.apply_store_overrides(self.database_url.as_deref(), self.schema.as_deref());
    }
}

/// The answer of `config.status` and `config.reload` (rpc.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigStatus {
    /// 1 at start-up, +1 per applied reload.
    pub version: u64,
    /// When the config in force was read.
    #[serde(serialize_with = "rfc3339")]
    pub loaded_at: jiff::Timestamp,
    /// The files of the config in force, relative to the directory.
    pub files: Vec<String>,
    /// The number of catalog workflows.
    pub workflows: usize,
    /// The number of tenant templates.
    pub tenant_templates: usize,
    /// Why the last reload was refused, or which restart-only setting it did not apply;
    /// `None` after a reload that applied everything.
    pub last_error: Option<LastError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub file: String,
    /// The first error (with its line when known), and how many more there were.
    pub message: String,
    #[serde(serialize_with = "rfc3339")]
    pub at: jiff::Timestamp,
}

fn rfc3339<S: Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// The live config: the current `Arc<Config>`, its status, and the reload that replaces it.
/// Cheap to clone; every clone is the same config.
#[derive(Clone, Debug)]
pub struct ConfigHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    overrides: Overrides,
    config: watch::Sender<Arc<Config>>,
    status: watch::Sender<ConfigStatus>,
    /// Held for a whole reload, so that two reloads never interleave.
    reload: Mutex<()>,
    /// The check beyond the directory's own rules that every config passes, the first
    /// one included: see [`Check`].
    check: Option<Check>,
    /// Told of every config a reload applies, before it is in force: see
    /// [`ConfigHandle::on_applied`].
    on_applied: OnApplied,
    /// Reloads refused as invalid (a watcher's repeat of the same error not counted again).
    reload_errors: std::sync::atomic::AtomicU64,
    /// Told when each reload begins and ends (the daemon tells systemd).
    reload_hook: std::sync::OnceLock<ReloadHook>,
}

/// Called with `true` as a reload begins and with `false` once it has ended, applied or
/// refused, whichever way it was asked for (watcher, SIGHUP, `config.reload`).
pub struct ReloadHook(pub Box<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadHook")
    }
}

/// Tells the hook that a reload has ended when dropped, however the reload returns.
struct ReloadInProgress<'a>(Option<&'a ReloadHook>);

impl ReloadInProgress<'_> {
    fn begin(hook: Option<&ReloadHook>) -> ReloadInProgress<'_> {
        if let Some(hook) = hook {
            (hook.0)(true);
        }
        ReloadInProgress(hook)
    }
}

impl Drop for ReloadInProgress<'_> {
    fn drop(&mut self) {
        if let Some(hook) = self.0 {
            (hook.0)(false);
        }
    }
}

#[derive(Default)]
struct OnApplied(std::sync::OnceLock<Box<AppliedFn>>);

impl std::fmt::Debug for OnApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnApplied")
    }
}

/// What [`ConfigHandle::on_applied`] calls: the config and the version it will have.
pub type AppliedFn = dyn Fn(&Config, u64) + Send + Sync;

/// A check every config must pass beyond the directory's own rules, given when the live
/// config is made: `Err` with the reason refuses a config. The daemon uses it to refuse a
/// config whose user-token key cannot be loaded (which `config`, knowing nothing of keys,
/// cannot tell), so that at start-up it is an invalid config and on a reload an invalid
/// edit that keeps the old config in force, like any other.
pub struct Check(pub Box<CheckFn>);

/// The function inside a [`Check`].
pub type CheckFn = dyn Fn(&Config) -> Result<(), ConfigError> + Send + Sync;

impl Check {
    fn run(check: Option<&Check>, config: Config) -> Result<Config, Vec<ConfigError>> {
        match check.map(|check| (check.0)(&config)) {
            Some(Err(e)) => Err(vec![e]),
            _ => Ok(config),
        }
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Check")
    }
}

impl ConfigHandle {
    /// Starts with `config` (as loaded from `dir`; `overrides` are applied to it here, so
    /// passing a config with them already applied is fine too) at version 1, once it passes
    /// `check`.
    pub fn new(
        config: Config,
        dir: PathBuf,
        overrides: Overrides,
        check: Option<Check>,
    ) -> Result<ConfigHandle, Vec<ConfigError>> {
        let mut config = Check::run(check.as_ref(), config)?;
        overrides.apply(&mut config.settings);
        let status = ConfigStatus {
            version: 1,
            loaded_at: jiff::Timestamp::now(),
            files: config.files.clone(),
            workflows: config.workflows.len(),
            tenant_templates: config.tenant_templates.len(),
            last_error: None,
        };
        let (config, _) = watch::channel(Arc::new(config));
        let (status, _) = watch::channel(status);
        Ok(ConfigHandle {
            inner: Arc::new(Inner {
                dir,
                overrides,
                config,
                status,
                reload: Mutex::new(()),
                check,
                on_applied: OnApplied::default(),
                reload_errors: Default::default(),
                reload_hook: Default::default(),
            }),
        })
    }

    /// [`load_dir`] then [`ConfigHandle::new`]: the start-up path.
    pub fn load(
        dir: PathBuf,
        overrides: Overrides,
        check: Option<Check>,
    ) -> Result<ConfigHandle, Vec<ConfigError>> {
        let config = load_dir(&dir)?;
        ConfigHandle::new(config, dir, overrides, check)
    }

    /// The config in force. Cheap (a read lock and an `Arc` clone): take it once per request
    /// or job chunk and use that snapshot throughout.
    pub fn current(&self) -> Arc<Config> {
        self.inner.config.borrow().clone()
    }

    /// Calls `f` with every config a reload applies, on the reloading thread, before the
    /// config is in force (so the daemon records a config in its change log before any call
    /// uses it). Set once; a second call is ignored and answers `false`.
    pub fn on_applied(&self, f: Box<AppliedFn>) -> bool {
        self.inner.on_applied.0.set(f).is_ok()
    }

    /// Notified on every applied reload.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.inner.config.subscribe()
    }

    /// Notified on every reload, applied or refused. A status is published after its config,
    /// so once a receiver sees version `n`, [`ConfigHandle::current`] is at least version `n`.
    pub fn subscribe_status(&self) -> watch::Receiver<ConfigStatus> {
        self.inner.status.subscribe()
    }

    pub fn status(&self) -> ConfigStatus {
        self.inner.status.borrow().clone()
    }

    pub fn version(&self) -> u64 {
        self.inner.status.borrow().version
    }

    /// Sets the hook told of every reload from now on; only the first one set is kept.
    pub fn on_reload(&self, hook: ReloadHook) {
        let _ = self.inner.reload_hook.set(hook);
    }

    /// How many reloads have been refused as invalid since start.
    pub fn reload_errors(&self) -> u64 {
        self.inner
            .reload_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn overrides(&self) -> &Overrides {
        &self.inner.overrides
    }

    /// Re-reads and validates the whole directory (blocking I/O: from async code use
    /// [`ConfigHandle::reload_async`]). Valid: the new config replaces the old one
    /// atomically and the version goes up by one; a changed restart-only setting (`socket`,
    /// `socket_mode`, `database`) keeps its running value and is reported in `last_error`.
    /// Invalid: the old config stays, every error is logged, the first one becomes
    /// `last_error`, and all are returned.
    pub fn reload(&self) -> Result<ConfigStatus, Vec<ConfigError>> {
        self.reload_inner(Mode::Always).map(|(status, _)| status)
    }

    /// [`ConfigHandle::reload`] on a blocking thread: for SIGHUP, `config.reload` and the
    /// watcher.
    pub async fn reload_async(&self) -> Result<ConfigStatus, Vec<ConfigError>> {
        self.reload_in_background(Mode::Always)
            .await
            .map(|(status, _)| status)
    }

    pub(super) async fn reload_in_background(
        &self,
        mode: Mode,
    ) -> Result<(ConfigStatus, bool), Vec<ConfigError>> {
        let handle = self.clone();
        match tokio::task::spawn_blocking(move || handle.reload_inner(mode)).await {
            Ok(result) => result,
            Err(e) => Err(vec![ConfigError {
                file: self.inner.dir.display().to_string(),
                line: None,
                message: format!("the reload failed: {e}"),
            }]),
        }
    }

    /// The reload; also says whether anything changed (always, in [`Mode::Always`]).
    pub(super) fn reload_inner(
        &self,
        mode: Mode,
    ) -> Result<(ConfigStatus, bool), Vec<ConfigError>> {
        let _serialised = self
            .inner
            .reload
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _told = ReloadInProgress::begin(self.inner.reload_hook.get());
        let now = jiff::Timestamp::now();
        let checked = load_dir(&self.inner.dir)
            .and_then(|config| Check::run(self.inner.check.as_ref(), config));
        let mut config = match checked {
            Ok(config) => config,
            Err(errors) => {
                let last_error = errors.first().map(|first| LastError {
                    file: first.file.clone(),
                    message: summary(first, errors.len()),
                    at: now,
                });
                let repeated =
                    mode == Mode::IfChanged && same_error(&self.status().last_error, &last_error);
                if !repeated {
                    self.inner
                        .reload_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for e in &errors {
                        tracing::warn!(error = %e, "invalid config; keeping the previous one");
                    }
                    self.inner
                        .status
                        .send_modify(|status| status.last_error = last_error);
                }
                return Err(errors);
            }
        };
        self.inner.overrides.apply(&mut config.settings);
        let running = self.current();
        let not_applied = keep_restart_only(&mut config.settings, &running.settings);
        let last_error = if not_applied.is_empty() {
            None
        } else {
            let message = format!(
                "{} changed: applies at restart; the running value is kept",
                not_applied.join(", ")
            );
            Some(LastError {
                file: SETTINGS_FILE.to_string(),
                message,
                at: now,
            })
        };
        if mode == Mode::IfChanged
            && *running == config
            && same_error(&self.status().last_error, &last_error)
        {
            return Ok((self.status(), false));
        }
        if let Some(note) = &last_error {
            tracing::warn!(file = %note.file, "{}", note.message);
        }
        let files = config.files.clone();
        let workflows = config.workflows.len();
        let tenant_templates = config.tenant_templates.len();
        if let Some(hook) = self.inner.on_applied.0.get() {
            hook(&config, self.status().version + 1);
        }
        self.inner.config.send_replace(Arc::new(config));
        let mut applied = None;
        self.inner.status.send_modify(|status| {
            *status = ConfigStatus {
                version: status.version + 1,
                loaded_at: now,
                files,
                workflows,
                tenant_templates,
                last_error,
            };
            applied = Some(status.clone());
        });
        let status = applied.unwrap_or_else(|| self.status());
        tracing::info!(
            version = status.version,
            workflows,
            tenant_templates,
            "config reloaded"
        );
        Ok((status, true))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Apply whatever is read, and count a new version.
    Always,
    /// Apply only what differs from the config in force (the watcher's second look).
    IfChanged,
}

/// The same error apart from its time.
fn same_error(a: &Option<LastError>, b: &Option<LastError>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.file == b.file && a.message == b.message,
        _ => false,
    }
}

/// Puts the running restart-only settings back into `new`; returns the names of those that
/// differed.
fn keep_restart_only(new: &mut Settings, running: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.socket != running.socket {
        changed.push("socket");
        new.socket = running.socket.clone();
    }
    if new.socket_mode != running.socket_mode {
        changed.push("socket_mode");
        new.socket_mode = running.socket_mode;
    }
    if new.database != running.database {
        changed.push("database");
        new.database = running.database.clone();
    }
    if new.rest.listen != running.rest.listen {
        changed.push("rest.listen");
        new.rest.listen = running.rest.listen;
    }
    if new.rest.allow_non_loopback != running.rest.allow_non_loopback {
        changed.push("rest.allow_non_loopback");
        new.rest.allow_non_loopback = running.rest.allow_non_loopback;
    }
    changed
}

/// `line 3: unknown key `x` (and 2 more errors)`.
fn summary(first: &ConfigError, count: usize) -> String {
    let mut message = match first.line {
        Some(line) => format!("line {line}: {}", first.message),
        None => first.message.clone(),
    };
    match count {
        0 | 1 => {}
        2 => message.push_str(" (and 1 more error)"),
        n => message.push_str(&format!(" (and {} more errors)", n - 1)),
    }
    message
}
