//! `as_of` (history.md §3): the answer a read would have given at an instant, from the
//! stored state then (`store::past`) and the config in force then (parsed from the files
//! the change log kept, once per content).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::api::history::truncated;
use crate::api::{Context, Errors};
use crate::config::Config;
use crate::store::past::Past;

/// How far ahead of the daemon's clock an `as_of` may be (history.md §3).
const FUTURE_SLACK_MS: i64 = 1000;

/// A checked `as_of`.
#[derive(Clone, Copy, Debug)]
pub struct AsOf {
    /// Milliseconds since the epoch: the store's unit.
    pub at: i64,
    pub timestamp: jiff::Timestamp,
}

/// Reads `as_of`: an RFC 3339 time not in the future.
pub fn parse_as_of(value: Option<&str>, errors: &mut Errors) -> Option<AsOf> {
    let text = value?;
    let Ok(timestamp) = text.parse::<jiff::Timestamp>() else {
        errors.push(
            "as_of",
            "must be an RFC 3339 timestamp such as 2026-11-29T12:00:00Z",
        );
        return None;
    };
    let at = timestamp.as_millisecond();
    if at > jiff::Timestamp::now().as_millisecond() + FUTURE_SLACK_MS {
        errors.push(
            "as_of",
            "is in the future; the past is all prefsd can answer for",
        );
        return None;
    }
    Some(AsOf { at, timestamp })
}

/// The last few configs parsed for `as_of`, by content hash: an `as_of` read usually asks
/// for one of a few recent configs, and parsing one costs more than the read.
#[derive(Default)]
pub struct PastConfigs(Mutex<Vec<(String, Arc<Config>)>>);

const PAST_CONFIGS: usize = 8;

impl PastConfigs {
    fn get(&self, hash: &str) -> Option<Arc<Config>> {
        let list = self.0.lock().ok()?;
        list.iter()
            .find(|(h, _)| h == hash)
            .map(|(_, c)| Arc::clone(c))
    }

    fn put(&self, hash: String, config: Arc<Config>) {
        if let Ok(mut list) = self.0.lock() {
            if list.len() >= PAST_CONFIGS {
                list.remove(0);
            }
            list.push((hash, config));
        }
    }
}

/// The config in force at `as_of`, checked against the retention horizon: the environment
/// default, tenant templates, workflow catalog and `[vars]` of then, with today's limits (a
/// limit guards the daemon now, not the past).
pub async fn config_at(ctx: &Context, as_of: AsOf) -> Result<Arc<Config>, Error> {
    Ok(read_at(ctx, as_of, |_| Ok(())).await?.0)
}

/// `f` on the stored state at `as_of`, with the config in force then ([`config_at`]), both
/// read in one read transaction: a second one cost a reader thread's wake-up and a
/// snapshot, about a tenth of an `as_of` read on a large database. The config's files are
/// read only when the parsed config is not cached ([`PastConfigs`]).
pub async fn read_at<R, F>(ctx: &Context, as_of: AsOf, f: F) -> Result<(Arc<Config>, R), Error>
where
    R: Send + 'static,
    F: FnOnce(&Past<'_, '_>) -> Result<R, Error> + Send + 'static,
{
    let at = as_of.at;
    let (retained, hash, result) = ctx
        .db
        .read(move |r| {
            let log = r.log();
            let retained = log.retained()?;
            if retained.from_at.is_some_and(|from| at < from) {
                return Ok::<_, Error>((retained, None, None));
            }
            Ok((retained, log.config_at(at)?, Some(f(&r.past(at))?)))
        })
        .await?;
    let Some(result) = result else {
        return Err(truncated("as_of", retained));
    };
    let config = match hash {
        Some(hash) => match ctx.past_configs.get(&hash) {
            Some(config) => config,
            None => parse_config(ctx, hash).await?,
        },
        // No config was ever recorded (a database the log has not reached yet).
        None => ctx.config(),
    };
    Ok((config, result))
}

/// Reads and parses the stored config with this hash, and caches it.
async fn parse_config(ctx: &Context, hash: String) -> Result<Arc<Config>, Error> {
    let key = hash.clone();
    let files = ctx
        .db
        .read(move |r| Ok::<_, Error>(r.log().config_files(&key)?))
        .await?;
    let current = ctx.config();
    let Some(files) = files else {
        // Configs are never deleted; one missing is a database from before they were kept.
        return Ok(current);
    };
    let files: Vec<(String, String)> = serde_json::from_str(&files)
        .map_err(|e| Error::Internal(format!("a stored config is unreadable: {e}")))?;
    let files = files
        .into_iter()
        .map(|(path, content)| (PathBuf::from(path), content))
        .collect();
    let mut config = Config::parse(files).map_err(|errors| {
        Error::Internal(format!(
            "a stored config no longer parses: {}",
            errors.first().map(ToString::to_string).unwrap_or_default()
        ))
    })?;
    config.settings.limits = current.settings.limits.clone();
    let config = Arc::new(config);
    ctx.past_configs.put(hash, Arc::clone(&config));
    Ok(config)
}
