//! The one mapping from the crate's [`Error`] to the JSON-RPC wire (rpc.md, Errors).
//! Nothing else builds error objects for domain errors.

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Value, json};

use crate::Error;

pub const NOT_FOUND: i32 = -32001;
pub const UNAUTHENTICATED: i32 = -32002;
pub const FORBIDDEN: i32 = -32003;
pub const LIMIT_EXCEEDED: i32 = -32004;
pub const CONFLICT: i32 = -32005;
pub const WORKFLOW_NOT_FOUND: i32 = -32006;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL: i32 = -32603;

fn object(code: i32, message: String, data: Value) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message, Some(data))
}

impl From<Error> for ErrorObjectOwned {
    fn from(e: Error) -> ErrorObjectOwned {
        match e {
            Error::Invalid(v) => {
                let message = match v.errors.as_slice() {
                    [one] => format!("invalid params: {one}"),
                    [first, rest @ ..] => {
                        format!("invalid params: {first} (and {} more)", rest.len())
                    }
                    [] => "invalid params".to_string(),
                };
                object(
                    INVALID_PARAMS,
                    message,
                    json!({ "type": "invalid_params", "errors": v.errors }),
                )
            }
            Error::NotFound(what) => object(
                NOT_FOUND,
                format!("{what} not found"),
                json!({ "type": "not_found" }),
            ),
            Error::LimitExceeded(field) => object(
                LIMIT_EXCEEDED,
                format!("limit exceeded: {field}"),
                json!({ "type": "limit_exceeded", "errors": [field] }),
            ),
            Error::Conflict(message) => object(CONFLICT, message, json!({ "type": "conflict" })),
            e @ Error::WorkflowNotFound(_) => object(
                WORKFLOW_NOT_FOUND,
                e.to_string(),
                json!({ "type": "workflow_not_found" }),
            ),
            Error::Unauthenticated(message) => object(
                UNAUTHENTICATED,
                message,
                json!({ "type": "unauthenticated" }),
            ),
            Error::Forbidden(message) => object(FORBIDDEN, message, json!({ "type": "forbidden" })),
            Error::Config(errors) => {
                let fields: Vec<Value> = errors
                    .iter()
                    .map(|e| {
                        let field = match e.line {
                            Some(line) => format!("{}:{line}", e.file),
                            None => e.file.clone(),
                        };
                        json!({ "field": field, "message": e.message })
                    })
                    .collect();
                let message = errors
                    .first()
                    .map(|e| format!("the config is invalid; the old config stays in force: {e}"))
                    .unwrap_or_else(|| "the config is invalid".into());
                object(
                    INVALID_PARAMS,
                    message,
                    json!({ "type": "invalid_params", "errors": fields }),
                )
            }
            Error::Store(e) if e.is_full() => {
                tracing::error!(error = %e, "write refused: the database is full");
                object(
                    INTERNAL,
                    "the database is full (disk space or size limit); nothing was written — free space and retry".into(),
                    json!({ "type": "internal_error" }),
                )
            }
            Error::Store(e) => {
                // The chain goes to the log; clients get no SQL or paths.
                tracing::error!(error = format!("{e:#}"), "internal error");
                object(
                    INTERNAL,
                    "internal error; the daemon log has the details".into(),
                    json!({ "type": "internal_error" }),
                )
            }
        }
    }
}

/// The `data.type` of the JSON-RPC errors that jsonrpsee produces itself.
pub fn type_of_code(code: i64) -> &'static str {
    match code {
        -32700 => "parse_error",
        -32600 => "invalid_request",
        -32601 => "method_not_found",
        -32602 => "invalid_params",
        _ => "internal_error",
    }
}
