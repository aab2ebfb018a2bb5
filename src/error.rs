//! The crate's one error type: what every domain operation can answer "no" with. The RPC
//! layer maps it to the wire in exactly one place (`rpc::error`).

use crate::config::ConfigError;
use crate::model::{FieldError, ValidationError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad params: every field that was wrong.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// The named thing does not exist (only where a method says so).
    #[error("{0} not found")]
    NotFound(String),
    /// Too many ids or recipients, or a body or set too large.
    #[error("{0}")]
    LimitExceeded(FieldError),
    /// An idempotency key reused with a different payload.
    #[error("{0}")]
    Conflict(String),
    /// A strict workflow catalog and an unknown workflow key.
    #[error(
        "workflow {0:?} is not in the workflow catalog (workflows.toml); check the key, add it to the catalog, or set strict_workflows = false in prefsd.toml"
    )]
    WorkflowNotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    /// `as_of` or `after` older than what the change log retains (history.md §4).
    #[error("{what} is older than the history this daemon retains (from {retained_from})")]
    HistoryTruncated {
        what: String,
        /// The earliest instant (RFC 3339) that can be answered.
        retained_from: String,
        /// The smallest `after` that can be answered.
        retained_seq: i64,
    },
    /// The config directory does not validate.
    #[error("the config is invalid: {}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Config(Vec<ConfigError>),
    /// A failure below the domain; its details go to the log, not to clients.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Any other failure that is not the caller's (a worker thread that panicked, an
    /// answer that would not serialise); logged, and only "internal error" on the wire.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid(ValidationError::one(field, message))
    }

    pub fn limit(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::LimitExceeded(FieldError::new(field, message))
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Error {
        Error::Invalid(ValidationError { errors: vec![e] })
    }
}
