//! The log (ops.md §3): where it goes (standard error), its format and its level.
//!
//! Format: `PREFSD_LOG_FORMAT`, else `[log] format`, else text on a terminal and JSON
//! otherwise (a journal or a log collector reads JSON lines). Level: `PREFSD_LOG` (an
//! env-filter string), else `[log] level`, else `info`. Colour only in text on a terminal,
//! and not when `NO_COLOR` is set: escape codes in a file or journal are noise.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the process's logger. `settings`: the `[log]` table of the config directory,
/// for `prefsd serve`; the client commands have none.
pub fn init(settings: &LogSettings) {
    let terminal = std::io::stderr().is_terminal();
    let from_env = std::env::var("PREFSD_LOG_FORMAT").ok();
    let format = match from_env.as_deref().map(LogFormat::parse) {
        Some(Some(format)) => format,
        // An unreadable variable is reported once the logger is up.
        _ => settings.format.unwrap_or(if terminal {
            LogFormat::Text
        } else {
            LogFormat::Json
        }),
    };
    let filter = EnvFilter::try_from_env("PREFSD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(settings.level.as_deref().unwrap_or("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
            .init(),
    }
    if let Some(bad) = from_env.filter(|v| LogFormat::parse(v).is_none()) {
        tracing::warn!(
            value = bad,
            "PREFSD_LOG_FORMAT must be `text` or `json`; ignored"
        );
    }
}
