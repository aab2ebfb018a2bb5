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
pub const HISTORY_TRUNCATED: i32 = -32007;
/// The store cannot be reached (fleet.md §5): retry later.
pub const UNAVAILABLE: i32 = -32008;
pub const INVALID_REQUEST: i32 = -32600;
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
            Error::HistoryTruncated {
                what,
                retained_from,
                retained_seq,
            } => object(
                HISTORY_TRUNCATED,
                format!(
                    "{what} is older than the history this daemon retains (from {retained_from}, seq {retained_seq})"
                ),
                json!({ "type": "history_truncated", "retained_from": retained_from, "retained_seq": retained_seq }),
            ),
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
            Error::Store(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "a call failed: the database cannot be reached");
                object(
                    UNAVAILABLE,
                    "the database cannot be reached; retry later (a write answered this may or may not have been applied)".into(),
                    json!({ "type": "unavailable" }),
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
            // The chain goes to the log; clients get no SQL or paths.
            Error::Store(e) => internal(format!("{e:#}")),
            Error::Internal(detail) => internal(detail),
        }
    }
}

/// A request the protocol layer refuses as such (not its params), with the bad fields in
/// `data.errors` when there are any.
pub fn invalid_request(message: String, errors: Option<Value>) -> ErrorObjectOwned {
    let data = match errors {
        Some(errors) => json!({ "type": "invalid_request", "errors": errors }),
        None => json!({ "type": "invalid_request" }),
    };
    object(INVALID_REQUEST, message, data)
}

/// An internal error: `detail` goes to the log, the client learns only that it happened.
pub fn internal(detail: impl std::fmt::Display) -> ErrorObjectOwned {
    tracing::error!(error = %detail, "internal error");
    object(
        INTERNAL,
        "internal error; the daemon log has the details".into(),
        json!({ "type": "internal_error" }),
    )
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

/// jsonrpsee's code for an oversized request.
pub const OVERSIZED_REQUEST: i64 = -32007;

/// jsonrpsee's code for a subscription past its limit per connection (the same number as
/// `workflow_not_found`, which always carries its `data.type`).
const TOO_MANY_SUBSCRIPTIONS: i64 = -32006;

/// `limit_exceeded` for a request (`what`: "the request body", "the WebSocket message")
/// larger than `limits.max_request_bytes`.
pub fn oversized(what: &str, max_request_bytes: u32) -> ErrorObjectOwned {
    let message =
        format!("{what} is larger than limits.max_request_bytes ({max_request_bytes} bytes)");
    object(
        LIMIT_EXCEEDED,
        format!("limit exceeded: {message}"),
        json!({ "type": "limit_exceeded", "errors": [{ "field": "body", "message": message }] }),
    )
}

/// Gives an error response that jsonrpsee produced itself the vocabulary of rpc.md: a
/// `data.type` from its code, clearer messages for parse errors and invalid requests, and
/// `limit_exceeded` for jsonrpsee's own limits: an oversized body (`max_request_bytes` names
/// the limit) and too many subscriptions on one WebSocket.
pub fn add_type(response: &mut Value, max_request_bytes: u32) {
    let Some(error) = response.get_mut("error").and_then(Value::as_object_mut) else {
        return;
    };
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let typed = error.get("data").and_then(|d| d.get("type")).is_some();
    let limit = match code {
        // `history_truncated` has the same number, and always its `data.type`.
        OVERSIZED_REQUEST if !typed => Some(oversized("the request body", max_request_bytes)),
        TOO_MANY_SUBSCRIPTIONS if !typed => {
            // jsonrpsee says "Exceeded max limit of N".
            let detail = error
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let message = format!(
                "too many subscriptions on this WebSocket ({}); unsubscribe or open another",
                detail.trim_start_matches("Exceeded max limit of ").trim()
            );
            Some(object(
                LIMIT_EXCEEDED,
                format!("limit exceeded: {message}"),
                json!({ "type": "limit_exceeded", "errors": [{ "field": "subscriptions", "message": message }] }),
            ))
        }
        _ => None,
    };
    if let Some(limit) = limit
        && let Ok(Value::Object(limit)) = serde_json::to_value(limit)
    {
        *error = limit;
        return;
    }
    let message = match code {
        -32700 => Some("parse error: the body is not valid JSON"),
        -32600 => Some("invalid request: not a JSON-RPC 2.0 request object"),
        _ => None,
    };
    if let Some(message) = message {
        error.insert("message".into(), json!(message));
    }
    let data = error.entry("data").or_insert(Value::Null);
    match data {
        Value::Object(map) => {
            map.entry("type")
                .or_insert_with(|| json!(type_of_code(code)));
        }
        other => {
            let detail = std::mem::take(other);
            let mut map = serde_json::Map::new();
            map.insert("type".into(), json!(type_of_code(code)));
            if !detail.is_null() {
                map.insert("detail".into(), detail);
            }
            *other = Value::Object(map);
        }
    }
}
