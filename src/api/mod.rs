//! The methods of rpc.md as plain async functions: typed params in, a serialisable result or
//! a crate [`Error`] out. This is where a request meets the store and the pure core; it knows
//! nothing of JSON-RPC or HTTP (that is `rpc`), and holds no SQL (that is `store`) and no
//! preference rules (those are `model`, `resolve` and `eval`).
//!
//! Every method is all-or-nothing: params are validated before anything is written, and all
//! writes of one call happen in one store transaction.

pub mod audiences;
pub mod backup;
pub mod bulk;
pub mod daemon;
pub mod evaluate;
pub mod export;
pub mod history;
pub mod lists;
pub mod past;
pub mod recipients;
pub mod strict;
pub mod tenants;

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::{Config, ConfigHandle};
use crate::jobs::Jobs;
use crate::model::ValidationError;
use crate::store::Db;
pub use crate::writes::{check_properties_size, merge_properties};

/// What every method may use: the store, the live config, the bulk worker's handle, the
/// daemon's start time and its shutdown.
pub struct Context {
    pub db: Db,
    pub config: ConfigHandle,
    pub jobs: Jobs,
    pub started: Instant,
    /// Cancelled by `server::run` when the daemon begins to shut down, so that long
    /// evaluations stop instead of holding up the graceful stop.
    pub stopping: CancellationToken,
    /// Configs of the past, parsed for `as_of` reads.
    pub past_configs: past::PastConfigs,
    /// The newest backup made, for `daemon.status`.
    pub backups: backup::Backups,
    /// The daemon's metrics (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Context {
    pub fn new(db: Db, config: ConfigHandle) -> Context {
        Context {
            db,
            config,
            jobs: Jobs::new(),
            started: Instant::now(),
            stopping: CancellationToken::new(),
            past_configs: past::PastConfigs::default(),
            backups: backup::Backups::default(),
            metrics: Arc::new(crate::metrics::Metrics::from_env()),
        }
    }

    /// One whole config for the whole call.
    pub fn config(&self) -> Arc<Config> {
        self.config.current()
    }
}

/// An answer already written as JSON text, serialised verbatim. serde_json writes a value
/// that serialises as a struct named by its raw-value token as the text itself, unparsed;
/// that is how its own `RawValue` serialises, and the only way to hand it text without a
/// second parse (`RawValue::from_string` validates). jsonrpsee parses the whole response
/// once more, so text that were not JSON would be caught there; the writers that make a
/// `Json` are tested against serde's own output. A serde_json that changed the token would
/// fail `rendered_json_is_written_verbatim`.
pub struct Json(pub String);

const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl Json {
    /// The text a writer made; `what` names it in the internal error of a writer that wrote
    /// something other than UTF-8, which the writers never do.
    pub fn from_utf8(bytes: Vec<u8>, what: &str) -> Result<Json, Error> {
        String::from_utf8(bytes)
            .map(Json)
            .map_err(|e| Error::Internal(format!("rendering {what}: {e}")))
    }
}

impl serde::Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        s.serialize_field(RAW_VALUE_TOKEN, self.0.as_str())?;
        s.end()
    }
}

/// Collects validation errors so that one response can name every bad field.
#[derive(Default)]
pub struct Errors(Vec<crate::model::FieldError>);

/// The name of a field inside another, `parent.child` (`recipients.3`, `channels.0.id`),
/// written out only when an error names it.
#[derive(Clone, Copy)]
pub struct FieldPath<'a>(pub &'a dyn std::fmt::Display, pub &'a dyn std::fmt::Display);

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Errors {
    /// Checks an id; `field` is turned into text only if the id is bad, so a call that
    /// checks a thousand ids does not format a thousand field names.
    pub fn id(&mut self, field: impl std::fmt::Display, value: &str) {
        if let Some(message) = crate::model::id_problem(value) {
            self.push(field.to_string(), message);
        }
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(crate::model::FieldError::new(field, message));
    }

    pub fn extend(&mut self, e: ValidationError) {
        self.0.extend(e.errors);
    }

    /// Keeps the value of a fallible step, or records its errors.
    pub fn take<T>(&mut self, result: Result<T, ValidationError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.extend(e);
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(ValidationError { errors: self.0 }))
        }
    }
}

/// `{ "deleted": bool }`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Deleted {
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn rendered_json_is_written_verbatim() {
        let text = r#"{"a":[1,"x\"y"],"b":null}"#;
        let json = Json(text.to_string());
        assert_eq!(serde_json::to_string(&json).expect("serialises"), text);
        let raw = serde_json::value::to_raw_value(&json).expect("serialises");
        assert_eq!(raw.get(), text);
        // Inside another value, too (jsonrpsee wraps it in a response object).
        let wrapped = serde_json::json!({ "result": serde_json::to_value(&json).ok() });
        assert!(wrapped.is_object());
        #[derive(serde::Serialize)]
        struct Response<'a> {
            result: &'a Json,
        }
        assert_eq!(
            serde_json::to_string(&Response { result: &json }).expect("serialises"),
            format!(r#"{{"result":{text}}}"#)
        );
    }
}
