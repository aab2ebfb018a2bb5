//! `daemon.*` and `config.*`: liveness, status and the config in force.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Error;
use crate::api::Context;
use crate::config::ConfigStatus;

/// Methods that take no params accept `{}` (or none) and refuse anything else.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `daemon.ping`: does nothing; the transport floor for benchmarks.
pub fn ping() -> &'static str {
    "pong"
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub protocol: u32,
    pub uptime_s: u64,
    pub schema_version: u32,
    pub counts: crate::store::Counts,
    pub jobs: Value,
    /// The read cache's size and hit counts (not in rpc.md; an addition for operators).
    pub cache: crate::store::CacheStats,
    /// The newest backup this daemon made (`daemon.backup` or `[backup]`), with its age in
    /// seconds, or null.
    pub last_backup: Value,
    /// The backend and, on PostgreSQL, the schema and the change feed (fleet.md §1).
    pub store: crate::store::StoreStatus,
}

/// `daemon.status`; `protocol` is the version of the wire protocol the caller serves it on.
pub async fn status(ctx: &Context, protocol: u32) -> Result<Status, Error> {
    let (counts, (queued, processing)) = ctx
        .db
        .read(|r| Ok::<_, Error>((r.counts()?, r.job_counts()?)))
        .await?;
    Ok(Status {
        version: env!("CARGO_PKG_VERSION"),
        protocol,
        uptime_s: ctx.started.elapsed().as_secs(),
        schema_version: ctx.db.schema_version(),
        counts,
        jobs: json!({ "queued": queued, "processing": processing }),
        cache: ctx.db.cache().stats(),
        last_backup: ctx.backups.status(),
        store: ctx.db.store_status(),
    })
}

/// `config.status`.
pub fn config_status(ctx: &Context) -> ConfigStatus {
    ctx.config.status()
}

/// `config.reload`: re-reads the directory now; an invalid config is an error and the old
/// one stays in force.
pub async fn config_reload(ctx: &Context) -> Result<ConfigStatus, Error> {
    let handle = ctx.config.clone();
    match tokio::task::spawn_blocking(move || handle.reload()).await {
        Ok(result) => result.map_err(Error::Config),
        Err(join) => Err(Error::Config(vec![crate::config::ConfigError {
            file: String::new(),
            line: None,
            message: format!("the reload task failed: {join}"),
        }])),
    }
}
