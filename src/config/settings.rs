//! `prefsd.toml`: the daemon's settings, their defaults, and their reading.

use std::path::{Path, PathBuf};

use serde_json::Value;

use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::reader::{Item, Lines, TomlReader, parse_toml};

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
    /// As written; `None` (not given) means strict whenever the catalog defines a
    /// workflow: read it through [`super::Config::strict_workflows`].
    pub strict_workflows: Option<bool>,
    /// `[vars]`: the `vars` namespace of conditions (a JSON object).
    pub vars: Value,
    pub limits: Limits,
    pub jobs: JobSettings,
    pub access: Access,
    /// `[history] retention_days`: how long the change log keeps changes (history.md §4);
    /// 0 (the default) keeps everything. Hot-reloaded.
    pub history_retention_days: u32,
    /// `[rest]` and `[rest.cors]` (rest.md §2.2, §2.3).
    pub rest: RestSettings,
    /// `[backup]`: scheduled backups (ops.md §6); hot-reloaded.
    pub backup: BackupSettings,
    /// `[log]`: read once at start (`logs::init`); not hot-reloaded.
    pub log: LogSettings,
    /// `[store]`: the backend (fleet.md §1). Restart-only.
    pub store: StoreSettings,
}

/// `[store]`: SQLite (the file `database`, the default) or PostgreSQL (fleet mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// `backend = "postgres"`; implied by a `url` given on the command line or in the
    /// environment (`--database-url`, `PREFSD_DATABASE_URL`).
    pub postgres: bool,
    /// `url`: a `postgres://` URL or a libpq key=value string. Never logged.
    pub url: Option<String>,
    /// `schema`: this environment's tables on PostgreSQL; default `public`.
    pub schema: String,
    /// `max_staleness_ms`: how long another daemon's write may go unseen here; default
    /// 1000 (fleet.md §3).
    pub max_staleness_ms: u32,
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            postgres: false,
            url: None,
            schema: "public".into(),
            max_staleness_ms: 1000,
        }
    }
}

impl Settings {
    /// Where the store is: the PostgreSQL schema of `[store]` when the backend is
    /// PostgreSQL, else the SQLite file `database`. `None` when PostgreSQL is chosen
    /// without a URL.
    pub fn store_location(&self) -> Option<crate::store::Location> {
        if !self.store.postgres {
            return Some(crate::store::Location::Sqlite(self.database.clone()));
        }
        Some(crate::store::Location::Postgres(crate::store::PgOptions {
            url: self.store.url.clone()?,
            schema: self.store.schema.clone(),
        }))
    }
}

/// Whether a `database` value is a PostgreSQL URL (fleet.md D1: an alias for
/// `backend = "postgres"` with that `url`).
pub fn is_postgres_url(value: &str) -> bool {
    value.starts_with("postgres://") || value.starts_with("postgresql://")
}

/// `[rest]`: the optional TCP listener of the REST API and its CORS origins.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestSettings {
    /// Restart-only. `None`: no TCP listener.
    pub listen: Option<std::net::SocketAddr>,
    /// Restart-only.
    pub allow_non_loopback: bool,
    /// `[rest.cors] allowed_origins`, matched exactly (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
}

/// `[backup]`: with a `dir`, the daemon backs the store up every `interval` and keeps the
/// newest `keep` backups there.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSettings {
    /// Default none: no scheduled backups.
    pub dir: Option<PathBuf>,
    /// Default 24 hours.
    pub interval: std::time::Duration,
    /// Default 7.
    pub keep: u32,
}

impl Default for BackupSettings {
    fn default() -> BackupSettings {
        BackupSettings {
            dir: None,
            interval: std::time::Duration::from_secs(24 * 3600),
            keep: 7,
        }
    }
}

/// `[log]` (ops.md §3). `PREFSD_LOG_FORMAT` and `PREFSD_LOG` win over these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// `None`: text on a terminal, JSON otherwise.
    pub format: Option<LogFormat>,
    /// An env-filter string (`info`, `prefsd=debug,warn`); `None`: `info`.
    pub level: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
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
    /// `[jobs] lease_s`, fleet mode: how long a daemon's claim on a job lasts past its last
    /// chunk; another daemon takes over a job whose runner died once it runs out. Default 30.
    pub lease_s: u32,
}

/// `[access]` (access.md).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access {
    /// Empty means the daemon's own uid and root.
    pub allowed_uids: Vec<u32>,
    pub require_credentials: bool,
    pub secret_keys: Vec<String>,
    /// Public keys (besides any `pk_…` Bearer): never a server caller; when set, the Bearer
    /// of a user-token request must be one of them (access.md).
    pub public_keys: Vec<String>,
    pub user_token_public_key_file: Option<PathBuf>,
    pub user_token_hs256_secret: Option<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            socket: in_unit_directory("RUNTIME_DIRECTORY", "prefsd.sock"),
            socket_mode: 0o600,
            database: in_unit_directory("STATE_DIRECTORY", "prefsd.db"),
            durability: Durability::Full,
            strict_workflows: None,
            vars: Value::Object(Default::default()),
            limits: Limits::default(),
            jobs: JobSettings {
                retention_days: 7,
                chunk_size: 250,
                lease_s: 30,
            },
            access: Access::default(),
            history_retention_days: 0,
            rest: RestSettings::default(),
            backup: BackupSettings::default(),
            log: LogSettings::default(),
            store: StoreSettings::default(),
        }
    }
}

/// `name` in the directory systemd made for the unit (`RuntimeDirectory=` sets
/// `RUNTIME_DIRECTORY`, `StateDirectory=` sets `STATE_DIRECTORY`; the first of a
/// colon-separated list), else `name` in the working directory.
fn in_unit_directory(variable: &str, name: &str) -> PathBuf {
    std::env::var_os(variable)
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .filter(|dir| dir.is_absolute())
        .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
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

impl Settings {
    /// Applies the command line and environment (`--socket`/`PREFSD_SOCKET`,
    /// `--database`/`PREFSD_DATABASE`, already resolved flag over environment): a given value
    /// wins over the file.
    pub fn apply_overrides(&mut self, socket: Option<PathBuf>, database: Option<PathBuf>) {
        if let Some(socket) = socket {
            self.socket = socket;
        }
        if let Some(database) = database {
            match database.to_str().filter(|d| is_postgres_url(d)) {
                Some(url) => {
                    self.store.postgres = true;
                    self.store.url = Some(url.to_string());
                }
                None => self.database = database,
            }
        }
    }

    /// Applies `--database-url`/`PREFSD_DATABASE_URL` (which implies the PostgreSQL
    /// backend) and `--schema`/`PREFSD_SCHEMA`.
    pub fn apply_store_overrides(&mut self, url: Option<&str>, schema: Option<&str>) {
        if let Some(url) = url {
            self.store.postgres = true;
            self.store.url = Some(url.to_string());
        }
        if let Some(schema) = schema {
            self.store.schema = schema.to_string();
        }
    }
}

/// `prefsd.toml`. Settings not given keep their defaults. Relative paths in the file are
/// taken relative to `base`, the config directory (ops.md §4: as Prometheus reads its
/// config file), so that a daemon started from any working directory finds the same files.
pub(super) fn parse_settings(
    file: &str,
    source: &str,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Settings {
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
                    settings.socket = base.join(path);
                }
            }
            "socket_mode" => {
                if let Some(mode) = socket_mode(&mut r, item) {
                    settings.socket_mode = mode;
                }
            }
            "database" => {
                if let Some(path) = r.path(name, item) {
                    settings.database = base.join(path);
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
                    settings.strict_workflows = Some(b);
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
                            "lease_s" => {
                                if let Some(n) = r.u32_in("jobs.lease_s", item, 1) {
                                    settings.jobs.lease_s = n;
                                }
                            }
                            _ => r.unknown_key(key, "[jobs]"),
                        }
                    }
                }
            }
            "store" => {
                if let Some(store) = r.table(name, item) {
                    parse_store(&mut r, store, &mut settings.store);
                }
            }
            "history" => {
                if let Some(history) = r.table(name, item) {
                    for (key, item) in history.iter() {
                        match key.get_ref().as_ref() {
                            "retention_days" => {
                                if let Some(n) = r.u32_in("history.retention_days", item, 0) {
                                    settings.history_retention_days = n;
                                }
                            }
                            _ => r.unknown_key(key, "[history]"),
                        }
                    }
                }
            }
            "log" => {
                if let Some(log) = r.table(name, item) {
                    parse_log(&mut r, log, &mut settings.log);
                }
            }
            "access" => {
                if let Some(access) = r.table(name, item) {
                    parse_access(&mut r, access, &mut settings.access);
                    if let Some(key) = &mut settings.access.user_token_public_key_file {
                        *key = base.join(&*key);
                    }
                }
            }
            "rest" => {
                if let Some(rest) = r.table(name, item) {
                    parse_rest(&mut r, rest, &mut settings.rest);
                }
            }
            "backup" => {
                if let Some(backup) = r.table(name, item) {
                    parse_backup(&mut r, backup, &mut settings.backup);
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

fn parse_backup(r: &mut TomlReader<'_>, table: &DeTable<'_>, backup: &mut BackupSettings) {
    for (key, item) in table.iter() {
        match key.get_ref().as_ref() {
            "dir" => backup.dir = r.path("backup.dir", item),
            "interval" => {
                if let Some(text) = r.string("backup.interval", item) {
                    match crate::duration::parse_duration(&text) {
                        Ok(interval) => backup.interval = interval,
                        Err(message) => r.err(item.span(), format!("`backup.interval`: {message}")),
                    }
                }
            }
            "keep" => {
                if let Some(n) = r.u32_in("backup.keep", item, 1) {
                    backup.keep = n;
                }
            }
            _ => r.unknown_key(key, "[backup]"),
        }
    }
}

fn parse_log(r: &mut TomlReader<'_>, table: &DeTable<'_>, log: &mut LogSettings) {
    for (key, item) in table.iter() {
        match key.get_ref().as_ref() {
            "format" => {
                if let Some(s) = r.string("log.format", item) {
                    match LogFormat::parse(&s) {
                        Some(format) => log.format = Some(format),
                        None => r.err(
                            item.span(),
                            format!("`log.format` must be \"text\" or \"json\", got \"{s}\""),
                        ),
                    }
                }
            }
            "level" => {
                if let Some(level) = r.string("log.level", item) {
                    match tracing_subscriber::EnvFilter::builder().parse(&level) {
                        Ok(_) => log.level = Some(level),
                        Err(e) => r.err(
                            item.span(),
                            format!("`log.level` is not a log filter (e.g. \"info\", \"prefsd=debug,warn\"): {e}"),
                        ),
                    }
                }
            }
            _ => r.unknown_key(key, "[log]"),
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
            "public_keys" => {
                if let Some(keys) = r.string_array("access.public_keys", item) {
                    access.public_keys = keys;
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

fn parse_rest(r: &mut TomlReader<'_>, table: &DeTable<'_>, rest: &mut RestSettings) {
    let mut listen_span = None;
    for (key, item) in table.iter() {
        match key.get_ref().as_ref() {
            "listen" => {
                let Some(text) = r.string("rest.listen", item) else {
                    continue;
                };
                match text.parse::<std::net::SocketAddr>() {
                    Ok(addr) => {
                        rest.listen = Some(addr);
                        listen_span = Some(item.span());
                    }
                    Err(_) => r.err(
                        item.span(),
                        format!(
                            "`rest.listen` must be IP:port (\"127.0.0.1:7400\"), got \"{text}\""
                        ),
                    ),
                }
            }
            "allow_non_loopback" => {
                if let Some(b) = r.bool("rest.allow_non_loopback", item) {
                    rest.allow_non_loopback = b;
                }
            }
            "cors" => {
                let Some(cors) = r.table("rest.cors", item) else {
                    continue;
                };
                for (key, item) in cors.iter() {
                    match key.get_ref().as_ref() {
                        "allowed_origins" => {
                            if let Some(origins) = r.string_array("rest.cors.allowed_origins", item)
                            {
                                rest.allowed_origins = origins;
                            }
                        }
                        _ => r.unknown_key(key, "[rest.cors]"),
                    }
                }
            }
            _ => r.unknown_key(key, "[rest]"),
        }
    }
    // rest.md §2.2: a listener off the loopback interface is an explicit choice.
    if let (Some(addr), Some(span)) = (rest.listen, listen_span)
        && !addr.ip().is_loopback()
        && !rest.allow_non_loopback
    {
        r.err(
            span,
            format!(
                "`rest.listen` {addr} is not a loopback address; set `rest.allow_non_loopback = true` to serve it anyway (put TLS in front)"
            ),
        );
    }
}

/// `[store]` (fleet.md §1).
fn parse_store(r: &mut TomlReader<'_>, table: &DeTable<'_>, store: &mut StoreSettings) {
    for (key, item) in table.iter() {
        let name = key.get_ref().as_ref();
        match name {
            "backend" => match r.string("store.backend", item).as_deref() {
                Some("sqlite") => store.postgres = false,
                Some("postgres") => store.postgres = true,
                Some(other) => r.err(
                    item.span(),
                    format!("`store.backend` must be \"sqlite\" or \"postgres\", got \"{other}\""),
                ),
                None => {}
            },
            "url" => {
                if let Some(url) = r.string("store.url", item) {
                    store.url = Some(url);
                }
            }
            "schema" => {
                if let Some(schema) = r.string("store.schema", item) {
                    if schema.is_empty() || schema.len() > 63 {
                        r.err(item.span(), "`store.schema` must be 1 to 63 bytes long");
                    } else {
                        store.schema = schema;
                    }
                }
            }
            "max_staleness_ms" => {
                if let Some(n) = r.u32_in("store.max_staleness_ms", item, 1) {
                    store.max_staleness_ms = n;
                }
            }
            _ => r.unknown_key(key, "[store]"),
        }
    }
}
