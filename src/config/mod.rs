//! The config directory (config.md): daemon settings, the environment default, tenant
//! templates and the workflow catalog, parsed as one immutable value.
//!
//! [`Config::parse`] is pure: file contents in, a whole config or every error out. The I/O
//! around it lives in `config::watch`, the only code that reads `config/`: [`read_dir`] and
//! [`load_dir`] read the directory, [`ConfigHandle`] holds the live config and its status
//! and reloads it, and [`watch`] reloads it when the directory changes.
//!
//! Relative paths in `prefsd.toml` (`socket`, `database`, `access.user_token.public_key_file`)
//! are kept as written, so they are relative to the daemon's working directory.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::model::{Channel, ChannelType, PreferenceSet, SetKind, Workflow, check_id};

mod live;
#[cfg(test)]
mod tests;
mod watch;

pub use live::{Check, ConfigHandle, ConfigStatus, LastError, Overrides, load_dir, read_dir};
pub use watch::{ConfigWatcher, watch};

/// Everything read from the config directory. Requests and job chunks take one
/// `Arc<Config>` snapshot, so each sees one whole config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub settings: Settings,
    /// `environment.json`; empty when the file is absent.
    pub environment: PreferenceSet,
    /// `tenants/<id>.json`, by tenant id.
    pub tenant_templates: BTreeMap<String, PreferenceSet>,
    /// `workflows.toml`, by workflow key.
    pub workflows: BTreeMap<String, CatalogWorkflow>,
    /// The files read, relative to the directory, sorted.
    pub files: Vec<String>,
}

/// One `[[workflow]]` of `workflows.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogWorkflow {
    pub workflow: Workflow,
    /// The channels the workflow sends to; empty means all six types.
    pub channels: Vec<Channel>,
}

/// `prefsd.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Restart-only.
    pub socket: PathBuf,
    /// Restart-only; default 0o600.
    pub socket_mode: u32,
    /// Restart-only.
    pub database: PathBuf,
    pub durability: Durability,
    pub strict_workflows: bool,
    /// `[vars]`: the `vars` namespace of conditions (a JSON object).
    pub vars: Value,
    pub limits: Limits,
    pub jobs: JobSettings,
    pub access: Access,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit (`synchronous = FULL`): an acknowledged write survives power loss.
    Full,
    /// `synchronous = NORMAL` in WAL mode: survives a process crash, may lose the last
    /// commits on power loss.
    Normal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Default 4 MiB.
    pub max_request_bytes: u32,
    /// Default 256 KiB.
    pub max_preference_set_bytes: usize,
    /// Default 1000.
    pub max_recipients: usize,
    /// Default 1000.
    pub max_bulk_users: usize,
    /// Default 4096.
    pub max_connections: u32,
    /// The largest the database may grow, in MiB (SQLite `max_page_count`); default none.
    /// Past it writes fail as on a full disk. Hot-reloaded.
    pub max_database_mb: Option<u64>,
    /// The read cache's budget in MiB of estimated memory; 0 turns it off. Default 8.
    /// Hot-reloaded. (Not in config.md: an addition, see the README's performance notes.)
    pub read_cache_mb: u32,
    /// The largest `properties` of a user, object, tenant or actor, in bytes of JSON.
    /// Default 64 KiB. (Not in config.md: an addition, issue 22.5.)
    pub max_properties_bytes: usize,
    /// The list items one call's conditions may compare (`eval::Budget`); past it the call
    /// is refused. Default ten million. (Not in config.md: an addition, issue 22.2.)
    pub max_list_items_per_call: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    /// Default 7.
    pub retention_days: u32,
    /// Users written per transaction by the bulk worker. Default 250: small enough that
    /// interactive writes wait at most a few milliseconds behind a chunk. While the daemon
    /// serves other calls the worker writes a tenth of it per chunk (see `jobs`).
    pub chunk_size: u32,
}

/// `[access]` (access.md).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access {
    /// Empty means the daemon's own uid and root.
    pub allowed_uids: Vec<u32>,
    pub require_credentials: bool,
    pub secret_keys: Vec<String>,
    pub user_token_public_key_file: Option<PathBuf>,
    pub user_token_hs256_secret: Option<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            socket: PathBuf::from("prefsd.sock"),
            socket_mode: 0o600,
            database: PathBuf::from("prefsd.db"),
            durability: Durability::Full,
            strict_workflows: false,
            vars: Value::Object(Default::default()),
            limits: Limits::default(),
            jobs: JobSettings {
                retention_days: 7,
                chunk_size: 250,
            },
            access: Access::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_bytes: 4 * 1024 * 1024,
            max_preference_set_bytes: 256 * 1024,
            max_recipients: 1000,
            max_bulk_users: 1000,
            max_connections: 4096,
            max_database_mb: None,
            read_cache_mb: 8,
            max_properties_bytes: 64 * 1024,
            max_list_items_per_call: 10_000_000,
        }
    }
}

/// One problem in the config directory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    fn new(file: &str, line: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// The file names of the config directory.
pub const SETTINGS_FILE: &str = "prefsd.toml";
pub const ENVIRONMENT_FILE: &str = "environment.json";
pub const WORKFLOWS_FILE: &str = "workflows.toml";
pub const TENANTS_DIR: &str = "tenants";

/// Editor temporaries and backups (`.name`, `name~`, `*.tmp`, `*.swp`, `*.swx`): never read,
/// and changes to them do not trigger a reload.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".tmp")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
}

/// What a path of the directory holds.
enum FileKind {
    Settings,
    Environment,
    Workflows,
    Tenant(String),
    /// Not a config file: temporaries, other extensions, other directories.
    Ignored,
}

fn classify(path: &Path) -> FileKind {
    let parts: Vec<&str> = match path
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<Vec<_>>>()
    {
        Some(parts) => parts,
        None => return FileKind::Ignored,
    };
    match parts.as_slice() {
        [name] if is_temp_name(name) => FileKind::Ignored,
        [SETTINGS_FILE] => FileKind::Settings,
        [ENVIRONMENT_FILE] => FileKind::Environment,
        [WORKFLOWS_FILE] => FileKind::Workflows,
        [TENANTS_DIR, name] if !is_temp_name(name) => match name.strip_suffix(".json") {
            Some(id) => FileKind::Tenant(id.to_string()),
            None => FileKind::Ignored,
        },
        _ => FileKind::Ignored,
    }
}

/// `tenants/acme.json`, with `/` whatever the platform.
fn display_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl Config {
    /// Parses a whole directory's files (path relative to the directory, contents).
    ///
    /// Recognised files: `prefsd.toml`, `environment.json`, `workflows.toml` and
    /// `tenants/<tenant_id>.json`; anything else is ignored (and a `.toml` or `.json` file
    /// with another name is logged, as it is probably a typo). A missing file means its
    /// defaults. Every error of every file is returned, each with its file and, where known,
    /// its line.
    pub fn parse(files: Vec<(PathBuf, String)>) -> Result<Config, Vec<ConfigError>> {
        let mut config = Config::default();
        let mut errors = Vec::new();
        for (path, content) in files {
            let name = display_path(&path);
            if content.len() > MAX_FILE_BYTES {
                errors.push(too_large(&name, content.len()));
                continue;
            }
            match classify(&path) {
                FileKind::Settings => {
                    config.settings = parse_settings(&name, &content, &mut errors);
                }
                FileKind::Environment => {
                    if let Some(set) = parse_set(&name, &content, &mut errors) {
                        config.environment = set;
                    }
                }
                FileKind::Workflows => {
                    config.workflows = parse_workflows(&name, &content, &mut errors);
                }
                FileKind::Tenant(id) => {
                    if let Err(e) = check_id("tenant id", &id) {
                        errors.push(ConfigError::new(
                            &name,
                            None,
                            format!("the file name is not a valid tenant id: {}", e.message),
                        ));
                    }
                    if let Some(set) = parse_set(&name, &content, &mut errors) {
                        config.tenant_templates.insert(id, set);
                    }
                }
                FileKind::Ignored => {
                    let extension = path.extension().and_then(|e| e.to_str());
                    let temp = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_none_or(is_temp_name);
                    if !temp && matches!(extension, Some("toml" | "json")) {
                        tracing::warn!(file = %name, "ignoring an unknown file in the config directory");
                    }
                    continue;
                }
            }
            config.files.push(name);
        }
        config.files.sort();
        check_set_sizes(&config, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }
}

impl Settings {
    /// Applies the command line and environment (`--socket`/`PREFSD_SOCKET`,
    /// `--database`/`PREFSD_DATABASE`, already resolved flag over environment): a given value
    /// wins over the file.
    pub fn apply_overrides(&mut self, socket: Option<PathBuf>, database: Option<PathBuf>) {
        if let Some(socket) = socket {
            self.socket = socket;
        }
        if let Some(database) = database {
            self.database = database;
        }
    }
}

/// The environment default and tenant templates obey `limits.max_preference_set_bytes` like
/// stored sets (measured as compact JSON).
fn check_set_sizes(config: &Config, errors: &mut Vec<ConfigError>) {
    let max = config.settings.limits.max_preference_set_bytes;
    let sets = std::iter::once((ENVIRONMENT_FILE.to_string(), &config.environment)).chain(
        config
            .tenant_templates
            .iter()
            .map(|(id, set)| (format!("{TENANTS_DIR}/{id}.json"), set)),
    );
    for (file, set) in sets {
        let size = set.to_value().to_string().len();
        if size > max {
            errors.push(ConfigError::new(
                &file,
                None,
                format!(
                    "the preference set is {size} bytes of JSON, more than limits.max_preference_set_bytes ({max})"
                ),
            ));
        }
    }
}

/// `environment.json` or a tenant template: JSON, then the PreferenceSet rules for defaults.
fn parse_set(file: &str, content: &str, errors: &mut Vec<ConfigError>) -> Option<PreferenceSet> {
    let value: Value = match serde_json::from_str(content) {
        Ok(value) => value,
        Err(e) => {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full);
            let line = (e.line() > 0).then_some(e.line());
            errors.push(ConfigError::new(
                file,
                line,
                format!("invalid JSON: {message}"),
            ));
            return None;
        }
    };
    match PreferenceSet::parse(&value, SetKind::Default, "") {
        Ok(set) => Some(set),
        Err(invalid) => {
            for e in invalid.errors {
                let message = if e.field.is_empty() {
                    format!("the preference set {}", e.message)
                } else {
                    format!("{}: {}", e.field, e.message)
                };
                errors.push(ConfigError::new(file, None, message));
            }
            None
        }
    }
}

/// The 1-based line of a byte offset. For one error; [`Lines`] answers many.
fn line_at(source: &str, offset: usize) -> usize {
    Lines::of(source).line_at(offset)
}

/// Where each line of a file ends, found once, so that naming the line of every workflow
/// and error costs a binary search and not a count from the start of the file (issue 22:
/// counting made a 20 000-workflow catalog take 8.7 s, quadratic in its length).
struct Lines {
    newlines: Vec<usize>,
}

impl Lines {
    fn of(source: &str) -> Lines {
        let newlines = source
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        Lines { newlines }
    }

    /// The 1-based line of a byte offset: one more than the newlines before it.
    fn line_at(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

/// The largest config file read, in bytes. A bigger one is refused before it is parsed
/// (a catalog at the workflow limit, with categories and channels, takes about 1 MiB), so a
/// reload costs at most parsing this much.
pub const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;

/// The most workflows `workflows.toml` may hold; more is refused with a message.
pub const MAX_WORKFLOWS: usize = 10_000;

/// Parses a TOML file into its spanned table, or records the syntax error.
fn parse_toml<'i>(
    file: &str,
    source: &'i str,
    errors: &mut Vec<ConfigError>,
) -> Option<DeTable<'i>> {
    match DeTable::parse(source) {
        Ok(table) => Some(table.into_inner()),
        Err(e) => {
            let line = e.span().map(|span| line_at(source, span.start));
            errors.push(ConfigError::new(
                file,
                line,
                format!("invalid TOML: {}", e.message()),
            ));
            None
        }
    }
}

type Item<'i> = Spanned<DeValue<'i>>;

/// The error for a config file over [`MAX_FILE_BYTES`].
pub(crate) fn too_large(file: &str, len: usize) -> ConfigError {
    ConfigError::new(
        file,
        None,
        format!(
            "the file is {len} bytes; config files may be at most {MAX_FILE_BYTES} bytes \
             ({} MiB)",
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
}

/// Reads typed values out of one TOML file, recording every problem with its line.
struct TomlReader<'a> {
    file: &'a str,
    lines: Lines,
    errors: &'a mut Vec<ConfigError>,
}

impl TomlReader<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.lines.line_at(span.start);
        self.errors
            .push(ConfigError::new(self.file, Some(line), message));
    }

    fn line(&self, span: Range<usize>) -> usize {
        self.lines.line_at(span.start)
    }

    fn unknown_key(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, within: &str) {
        let name = key.get_ref();
        let message = if within.is_empty() {
            format!("unknown key `{name}`")
        } else {
            format!("unknown key `{name}` in {within}")
        };
        self.err(key.span(), message);
    }

    fn wrong_type(&mut self, name: &str, item: &Item<'_>, expected: &str) {
        let got = item.get_ref().type_str();
        self.err(
            item.span(),
            format!("`{name}` must be {expected}, got {got}"),
        );
    }

    fn table<'t, 'i>(&mut self, name: &str, item: &'t Item<'i>) -> Option<&'t DeTable<'i>> {
        match item.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(name, item, "a table");
                None
            }
        }
    }

    fn string(&mut self, name: &str, item: &Item<'_>) -> Option<String> {
        match item.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(name, item, "a string");
                None
            }
        }
    }

    fn non_empty_string(&mut self, name: &str, item: &Item<'_>) -> Option<String> {
        let s = self.string(name, item)?;
        if s.is_empty() {
            self.err(item.span(), format!("`{name}` must not be empty"));
            return None;
        }
        Some(s)
    }

    fn path(&mut self, name: &str, item: &Item<'_>) -> Option<PathBuf> {
        self.non_empty_string(name, item).map(PathBuf::from)
    }

    fn bool(&mut self, name: &str, item: &Item<'_>) -> Option<bool> {
        match item.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(name, item, "true or false");
                None
            }
        }
    }

    fn integer(&mut self, name: &str, item: &Item<'_>) -> Option<i128> {
        match item.get_ref() {
            DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(item.span(), format!("`{name}` is out of range"));
                    None
                }
            },
            _ => {
                self.wrong_type(name, item, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    fn int_in(&mut self, name: &str, item: &Item<'_>, min: i128, max: i128) -> Option<i128> {
        let n = self.integer(name, item)?;
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            self.err(
                item.span(),
                format!("`{name}` must be an integer from {min} to {max}, got {n}"),
            );
            None
        }
    }

    fn u32_in(&mut self, name: &str, item: &Item<'_>, min: u32) -> Option<u32> {
        let n = self.int_in(name, item, min.into(), u32::MAX.into())?;
        u32::try_from(n).ok()
    }

    fn usize_in(&mut self, name: &str, item: &Item<'_>, min: usize) -> Option<usize> {
        let max = i128::try_from(usize::MAX).unwrap_or(i128::MAX);
        let min = i128::try_from(min).unwrap_or(0);
        let n = self.int_in(name, item, min, max)?;
        usize::try_from(n).ok()
    }

    fn array<'t, 'i>(&mut self, name: &str, item: &'t Item<'i>) -> Option<&'t [Item<'i>]> {
        match item.get_ref() {
            DeValue::Array(array) => Some(array),
            _ => {
                self.wrong_type(name, item, "an array");
                None
            }
        }
    }

    fn string_array(&mut self, name: &str, item: &Item<'_>) -> Option<Vec<String>> {
        let array = self.array(name, item)?;
        let mut out = Vec::with_capacity(array.len());
        let mut ok = true;
        for (i, element) in array.iter().enumerate() {
            match self.non_empty_string(&format!("{name}[{i}]"), element) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A TOML value as JSON (for `[vars]`): datetimes become their RFC 3339 strings.
    fn json(&mut self, name: &str, item: &Item<'_>) -> Option<Value> {
        match item.get_ref() {
            DeValue::String(s) => Some(Value::String(s.to_string())),
            DeValue::Boolean(b) => Some(Value::Bool(*b)),
            DeValue::Datetime(d) => Some(Value::String(d.to_string())),
            DeValue::Integer(_) => {
                let n = self.integer(name, item)?;
                if let Ok(n) = i64::try_from(n) {
                    Some(Value::from(n))
                } else if let Ok(n) = u64::try_from(n) {
                    Some(Value::from(n))
                } else {
                    self.err(item.span(), format!("`{name}` is out of range"));
                    None
                }
            }
            DeValue::Float(f) => {
                let number = f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64);
                match number {
                    Some(n) => Some(Value::Number(n)),
                    None => {
                        self.err(
                            item.span(),
                            format!("`{name}` must be a finite number, got {}", f.as_str()),
                        );
                        None
                    }
                }
            }
            DeValue::Array(array) => {
                let mut out = Vec::with_capacity(array.len());
                for (i, element) in array.iter().enumerate() {
                    out.push(self.json(&format!("{name}[{i}]"), element)?);
                }
                Some(Value::Array(out))
            }
            DeValue::Table(table) => {
                let mut out = serde_json::Map::new();
                for (key, value) in table.iter() {
                    let key = key.get_ref().to_string();
                    let v = self.json(&format!("{name}.{key}"), value)?;
                    out.insert(key, v);
                }
                Some(Value::Object(out))
            }
        }
    }
}

/// `prefsd.toml`. Settings not given keep their defaults.
fn parse_settings(file: &str, source: &str, errors: &mut Vec<ConfigError>) -> Settings {
    let mut settings = Settings::default();
    let Some(table) = parse_toml(file, source, errors) else {
        return settings;
    };
    let mut r = TomlReader {
        file,
        lines: Lines::of(source),
        errors,
    };
    for (key, item) in table.iter() {
        let name = key.get_ref().as_ref();
        match name {
            "socket" => {
                if let Some(path) = r.path(name, item) {
                    settings.socket = path;
                }
            }
            "socket_mode" => {
                if let Some(mode) = socket_mode(&mut r, item) {
                    settings.socket_mode = mode;
                }
            }
            "database" => {
                if let Some(path) = r.path(name, item) {
                    settings.database = path;
                }
            }
            "durability" => match r.string(name, item).as_deref() {
                Some("full") => settings.durability = Durability::Full,
                Some("normal") => settings.durability = Durability::Normal,
                Some(other) => r.err(
                    item.span(),
                    format!("`durability` must be \"full\" or \"normal\", got \"{other}\""),
                ),
                None => {}
            },
            "strict_workflows" => {
                if let Some(b) = r.bool(name, item) {
                    settings.strict_workflows = b;
                }
            }
            "vars" => {
                if r.table(name, item).is_some()
                    && let Some(vars) = r.json(name, item)
                {
                    settings.vars = vars;
                }
            }
            "limits" => {
                if let Some(limits) = r.table(name, item) {
                    parse_limits(&mut r, limits, &mut settings.limits);
                }
            }
            "jobs" => {
                if let Some(jobs) = r.table(name, item) {
                    for (key, item) in jobs.iter() {
                        match key.get_ref().as_ref() {
                            "retention_days" => {
                                if let Some(n) = r.u32_in("jobs.retention_days", item, 0) {
                                    settings.jobs.retention_days = n;
                                }
                            }
                            "chunk_size" => {
                                if let Some(n) = r.u32_in("jobs.chunk_size", item, 1) {
                                    settings.jobs.chunk_size = n;
                                }
                            }
                            _ => r.unknown_key(key, "[jobs]"),
                        }
                    }
                }
            }
            "access" => {
                if let Some(access) = r.table(name, item) {
                    parse_access(&mut r, access, &mut settings.access);
                }
            }
            _ => r.unknown_key(key, ""),
        }
    }
    settings
}

/// `socket_mode = 0o660` (or any integer up to 0o777), or `socket_mode = "0660"` (octal).
fn socket_mode(r: &mut TomlReader<'_>, item: &Item<'_>) -> Option<u32> {
    const HINT: &str = "a permission mode from 0 to 0o777, written 0o660 or \"0660\"";
    let mode = match item.get_ref() {
        DeValue::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            let valid = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
            let parsed = if valid {
                u32::from_str_radix(digits, 8).ok()
            } else {
                None
            };
            match parsed {
                Some(mode) => mode,
                None => {
                    r.err(
                        item.span(),
                        format!("`socket_mode` must be {HINT}, got \"{s}\""),
                    );
                    return None;
                }
            }
        }
        DeValue::Integer(_) => {
            let n = r.integer("socket_mode", item)?;
            u32::try_from(n).unwrap_or(u32::MAX)
        }
        _ => {
            r.wrong_type("socket_mode", item, HINT);
            return None;
        }
    };
    if mode > 0o777 {
        r.err(
            item.span(),
            format!("`socket_mode` must be {HINT}, got {mode} (0o{mode:o})"),
        );
        return None;
    }
    Some(mode)
}

fn parse_limits(r: &mut TomlReader<'_>, table: &DeTable<'_>, limits: &mut Limits) {
    for (key, item) in table.iter() {
        let name = key.get_ref().as_ref();
        let full = format!("limits.{name}");
        match name {
            "max_request_bytes" => {
                if let Some(n) = r.u32_in(&full, item, 1) {
                    limits.max_request_bytes = n;
                }
            }
            "max_preference_set_bytes" => {
                if let Some(n) = r.usize_in(&full, item, 1) {
                    limits.max_preference_set_bytes = n;
                }
            }
            "max_recipients" => {
                if let Some(n) = r.usize_in(&full, item, 1) {
                    limits.max_recipients = n;
                }
            }
            "max_bulk_users" => {
                if let Some(n) = r.usize_in(&full, item, 1) {
                    limits.max_bulk_users = n;
                }
            }
            "max_connections" => {
                if let Some(n) = r.u32_in(&full, item, 1) {
                    limits.max_connections = n;
                }
            }
            "max_database_mb" => {
                if let Some(n) = r.u32_in(&full, item, 1) {
                    limits.max_database_mb = Some(n.into());
                }
            }
            "read_cache_mb" => {
                if let Some(n) = r.u32_in(&full, item, 0) {
                    limits.read_cache_mb = n;
                }
            }
            "max_properties_bytes" => {
                if let Some(n) = r.usize_in(&full, item, 1) {
                    limits.max_properties_bytes = n;
                }
            }
            "max_list_items_per_call" => {
                if let Some(n) = r.u32_in(&full, item, 1) {
                    limits.max_list_items_per_call = n.into();
                }
            }
            _ => r.unknown_key(key, "[limits]"),
        }
    }
}

fn parse_access(r: &mut TomlReader<'_>, table: &DeTable<'_>, access: &mut Access) {
    for (key, item) in table.iter() {
        let name = key.get_ref().as_ref();
        match name {
            "allowed_uids" => {
                let Some(array) = r.array("access.allowed_uids", item) else {
                    continue;
                };
                let mut uids = Vec::with_capacity(array.len());
                for (i, element) in array.iter().enumerate() {
                    if let Some(uid) = r.u32_in(&format!("access.allowed_uids[{i}]"), element, 0) {
                        uids.push(uid);
                    }
                }
                access.allowed_uids = uids;
            }
            "require_credentials" => {
                if let Some(b) = r.bool("access.require_credentials", item) {
                    access.require_credentials = b;
                }
            }
            "secret_keys" => {
                if let Some(keys) = r.string_array("access.secret_keys", item) {
                    access.secret_keys = keys;
                }
            }
            "user_token" => {
                let Some(token) = r.table("access.user_token", item) else {
                    continue;
                };
                for (key, item) in token.iter() {
                    match key.get_ref().as_ref() {
                        "public_key_file" => {
                            access.user_token_public_key_file =
                                r.path("access.user_token.public_key_file", item);
                        }
                        "hs256_secret" => {
                            access.user_token_hs256_secret =
                                r.non_empty_string("access.user_token.hs256_secret", item);
                        }
                        _ => r.unknown_key(key, "[access.user_token]"),
                    }
                }
                if access.user_token_public_key_file.is_some()
                    && access.user_token_hs256_secret.is_some()
                {
                    r.err(
                        item.span(),
                        "[access.user_token] takes either `public_key_file` or `hs256_secret`, not both",
                    );
                }
            }
            _ => r.unknown_key(key, "[access]"),
        }
    }
}

/// `workflows.toml`: `[[workflow]]` tables and nothing else.
fn parse_workflows(
    file: &str,
    source: &str,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, CatalogWorkflow> {
    let mut workflows = BTreeMap::new();
    let Some(table) = parse_toml(file, source, errors) else {
        return workflows;
    };
    let mut r = TomlReader {
        file,
        lines: Lines::of(source),
        errors,
    };
    // The line each key was first defined on, to name it in duplicate errors.
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    for (key, item) in table.iter() {
        if key.get_ref().as_ref() != "workflow" {
            let message = format!(
                "unknown key `{}`: the catalog holds only [[workflow]] tables",
                key.get_ref()
            );
            r.err(key.span(), message);
            continue;
        }
        let Some(array) = r.array("workflow", item) else {
            continue;
        };
        if array.len() > MAX_WORKFLOWS {
            r.err(
                item.span(),
                format!(
                    "the catalog holds {} workflows; at most {MAX_WORKFLOWS} are allowed",
                    array.len()
                ),
            );
            continue;
        }
        for element in array.iter() {
            let Some(workflow) = parse_workflow(&mut r, element) else {
                continue;
            };
            let line = r.line(element.span());
            let key = workflow.workflow.key.clone();
            if let Some(first) = first_line.get(&key) {
                r.err(
                    element.span(),
                    format!("duplicate workflow key `{key}` (first defined on line {first})"),
                );
                continue;
            }
            first_line.insert(key.clone(), line);
            workflows.insert(key, workflow);
        }
    }
    workflows
}

fn parse_workflow(r: &mut TomlReader<'_>, item: &Item<'_>) -> Option<CatalogWorkflow> {
    let DeValue::Table(table) = item.get_ref() else {
        r.wrong_type("workflow", item, "a table (write [[workflow]])");
        return None;
    };
    let mut ok = true;
    let mut key = None;
    let mut workflow = Workflow::default();
    let mut channels = Vec::new();
    for (k, item) in table.iter() {
        let parsed = match k.get_ref().as_ref() {
            "key" => r
                .string("key", item)
                .and_then(|s| match check_id("key", &s) {
                    Ok(()) => {
                        key = Some(s);
                        Some(())
                    }
                    Err(e) => {
                        r.err(item.span(), format!("`key` {}", e.message));
                        None
                    }
                }),
            "categories" => r.string_array("categories", item).map(|categories| {
                workflow.categories = categories;
            }),
            "commercial" => r.bool("commercial", item).map(|b| workflow.commercial = b),
            "override_preferences" => r
                .bool("override_preferences", item)
                .map(|b| workflow.override_preferences = b),
            "channels" => parse_channels(r, item).map(|c| channels = c),
            _ => {
                r.unknown_key(k, "[[workflow]]");
                None
            }
        };
        ok &= parsed.is_some();
    }
    let Some(key) = key else {
        if ok {
            r.err(item.span(), "a [[workflow]] needs a `key`");
        }
        return None;
    };
    workflow.key = key;
    ok.then_some(CatalogWorkflow { workflow, channels })
}

/// `channels = [{ type = "email" }, { type = "chat", id = "..." }]`.
fn parse_channels(r: &mut TomlReader<'_>, item: &Item<'_>) -> Option<Vec<Channel>> {
    let array = r.array("channels", item)?;
    let mut channels: Vec<Channel> = Vec::with_capacity(array.len());
    let mut ok = true;
    for (i, element) in array.iter().enumerate() {
        let name = format!("channels[{i}]");
        let Some(table) = r.table(&name, element) else {
            ok = false;
            continue;
        };
        let mut channel_type = None;
        let mut id = None;
        let mut this_ok = true;
        for (k, item) in table.iter() {
            match k.get_ref().as_ref() {
                "type" => match r.string(&format!("{name}.type"), item) {
                    Some(s) => match ChannelType::parse(&s) {
                        Some(t) => channel_type = Some(t),
                        None => {
                            let known: Vec<&str> =
                                ChannelType::ALL.iter().map(|t| t.as_str()).collect();
                            r.err(
                                item.span(),
                                format!(
                                    "unknown channel type \"{s}\" (known: {})",
                                    known.join(", ")
                                ),
                            );
                            this_ok = false;
                        }
                    },
                    None => this_ok = false,
                },
                "id" => match r.string(&format!("{name}.id"), item) {
                    Some(s) => match check_id("id", &s) {
                        Ok(()) => id = Some(s),
                        Err(e) => {
                            r.err(item.span(), format!("`{name}.id` {}", e.message));
                            this_ok = false;
                        }
                    },
                    None => this_ok = false,
                },
                _ => {
                    r.unknown_key(k, "a channel");
                    this_ok = false;
                }
            }
        }
        if !this_ok {
            ok = false;
            continue;
        }
        let Some(channel_type) = channel_type else {
            r.err(element.span(), format!("`{name}` needs a `type`"));
            ok = false;
            continue;
        };
        let channel = Channel { channel_type, id };
        if channels.contains(&channel) {
            r.err(element.span(), format!("`{name}` is listed twice"));
            ok = false;
            continue;
        }
        channels.push(channel);
    }
    ok.then_some(channels)
}
