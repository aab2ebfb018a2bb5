//! The config directory (config.md): daemon settings, the environment default, tenant
//! templates and the workflow catalog, parsed as one immutable value.
//!
//! [`Config::parse`] is pure: file contents in, a whole config or every error out. The
//! watcher that re-reads the directory on change lives in `config::watch` and is the only
//! code that reads `config/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::model::{Channel, PreferenceSet, Workflow};

/// Everything read from the config directory. Requests and job chunks take one
/// `Arc<Config>` snapshot, so each sees one whole config.
#[derive(Clone, Debug, Default)]
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
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    /// Default 7.
    pub retention_days: u32,
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
            jobs: JobSettings { retention_days: 7 },
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

impl Config {
    /// Parses a whole directory's files (path relative to the directory, contents).
    pub fn parse(files: Vec<(PathBuf, String)>) -> Result<Config, Vec<ConfigError>> {
        let _ = files;
        todo!("config parser")
    }
}
