//! The config directory (config.md): daemon settings, the environment default, tenant
//! templates and the workflow catalog, parsed as one immutable value.
//!
//! [`Config::parse`] is pure: file contents in, a whole config or every error out. One file
//! per config file: `settings` (`prefsd.toml`), `catalog` (`workflows.toml`), over the
//! TOML `reader` that names every error's line. The I/O around them: `config::live`, the
//! only code that reads `config/` ([`read_dir`], [`load_dir`], and [`ConfigHandle`], which
//! holds the live config and its status and reloads it), and `config::watch`, whose
//! [`watch`] reloads it when the directory changes.
//!
//! Relative paths in `prefsd.toml` (`socket`, `database`, `access.user_token.public_key_file`)
//! are relative to the config directory ([`Config::parse_in`]); those of flags and the
//! environment stay relative to the working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::{PreferenceSet, SetKind, check_id};

mod catalog;
mod live;
mod reader;
mod settings;
#[cfg(test)]
mod tests;
mod watch;

pub use catalog::{CatalogWorkflow, MAX_WORKFLOWS};
pub use live::{
    Check, ConfigHandle, ConfigStatus, LastError, Overrides, ReloadHook, load_dir, read_dir,
};
pub use settings::{
    Access, BackupSettings, Durability, JobSettings, Limits, LogFormat, LogSettings, RestSettings,
    Settings,
};
pub use watch::{ConfigWatcher, watch};

use catalog::parse_workflows;
use reader::too_large;
use settings::parse_settings;

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
    /// Those files' contents, by name: the change log stores them once per content, so that
    /// a point-in-time answer can parse the config that was in force (history.md §1).
    pub sources: Vec<(String, String)>,
}

impl Config {
    /// Whether a workflow key that is not in the catalog is refused: as `strict_workflows`
    /// says, else strict whenever the catalog defines at least one workflow (a typo in a
    /// key must not answer "send" to a recipient who opted out of the workflow meant), and
    /// lenient with an empty catalog.
    pub fn strict_workflows(&self) -> bool {
        self.settings
            .strict_workflows
            .unwrap_or(!self.workflows.is_empty())
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
        Config::parse_in(Path::new(""), files)
    }

    /// [`Config::parse`] of the directory `dir`: relative paths in `prefsd.toml` are
    /// taken relative to it.
    pub fn parse_in(dir: &Path, files: Vec<(PathBuf, String)>) -> Result<Config, Vec<ConfigError>> {
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
                    config.settings = parse_settings(&name, &content, dir, &mut errors);
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
            config.files.push(name.clone());
            config.sources.push((name, content));
        }
        config.files.sort();
        config.sources.sort();
        check_set_sizes(&config, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
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

/// The largest config file read, in bytes. A bigger one is refused before it is parsed
/// (a catalog at the workflow limit, with categories and channels, takes about 1 MiB), so a
/// reload costs at most parsing this much.
pub const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;
