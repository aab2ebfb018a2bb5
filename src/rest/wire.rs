//! The wire conventions of rest.md §3, §6 and §7: a request as a [`Call`] (caller, decoded
//! path params, query, body), answers as JSON with Knock's content type, and the one
//! mapping of errors to Knock's envelope ([`RestError`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, RawPathParams};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::auth::{Caller, Credentials, Denied, Presented};
use crate::model::change::{Actor, Origin};
use crate::rest::{Rest, Via};

/// How long a request body may take to arrive (as on JSON-RPC, `rpc::http`).
const BODY_READ_TIMEOUT: Duration = crate::rpc::http::BODY_READ_TIMEOUT;

const JSON: &str = "application/json; charset=utf-8";

/// A REST error: its status, Knock's body, and extra headers.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    body: Value,
    should_retry_false: bool,
}

impl RestError {
    fn new(status: StatusCode, code: &str, kind: &str, message: impl Into<String>) -> RestError {
        RestError {
            status,
            body: json!({ "code": code, "message": message.into(), "status": status.as_u16(), "type": kind }),
            should_retry_false: false,
        }
    }

    /// 422 for one bad field (a query parameter, a path id, a body field).
    pub fn invalid(field: &str, message: &str) -> RestError {
        RestError::from(Error::invalid(field, message))
    }

    /// 400 `invalid_json`.
    pub fn bad_json(message: impl Into<String>) -> RestError {
        RestError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "invalid_request_error",
            message,
        )
    }

    fn auth(status: StatusCode, code: &str, denied: &Denied) -> RestError {
        RestError::new(status, code, "authentication_error", denied.to_string())
    }

    /// Knock's body for a path no route matches (rest.md §7, A16).
    pub fn no_route() -> RestError {
        RestError {
            status: StatusCode::NOT_FOUND,
            body: json!({ "errors": { "detail": "404 Not Found" } }),
            should_retry_false: false,
        }
    }

    /// The error with the field names of a validation error that start with `from` (the
    /// RPC param holding the request body) renamed to start with `to` (the body itself).
    pub fn renamed(e: Error, from: &str, to: &str) -> RestError {
        let e = match e {
            Error::Invalid(mut v) => {
                for error in &mut v.errors {
                    if let Some(rest) = error.field.strip_prefix(from) {
                        let rest = rest.strip_prefix('.').unwrap_or(rest);
                        error.field = match (to.is_empty(), rest.is_empty()) {
                            (true, _) => rest.to_string(),
                            (false, true) => to.to_string(),
                            (false, false) => format!("{to}.{rest}"),
                        };
                    }
                }
                Error::Invalid(v)
            }
            other => other,
        };
        RestError::from(e)
    }
}

/// The mapping of rest.md §7 from the crate's errors.
impl From<Error> for RestError {
    fn from(e: Error) -> RestError {
        const INVALID: &str = "invalid_request_error";
        match e {
            Error::Invalid(v) => {
                let message = v
                    .errors
                    .first()
                    .map_or_else(|| "invalid params".to_string(), ToString::to_string);
                let errors: Vec<Value> = v
                    .errors
                    .iter()
                    .map(|e| json!({ "field": e.field, "message": e.message, "type": "invalid" }))
                    .collect();
                let mut error = RestError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_params",
                    INVALID,
                    message,
                );
                error.body["errors"] = Value::Array(errors);
                error
            }
            Error::LimitExceeded(field) => {
                let mut error = RestError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_params",
                    INVALID,
                    field.to_string(),
                );
                error.body["errors"] = json!([
                    { "field": field.field, "message": field.message, "type": "invalid" }
                ]);
                error
            }
            e @ Error::WorkflowNotFound(_) => RestError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_params",
                INVALID,
                e.to_string(),
            ),
            e @ Error::NotFound(_) => {
                RestError::new(StatusCode::NOT_FOUND, "not_found", INVALID, e.to_string())
            }
            Error::Conflict(message) => {
                let mut error = RestError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    INVALID,
                    message,
                );
                error.should_retry_false = true;
                error
            }
            Error::Unauthenticated(message) => RestError::new(
                StatusCode::UNAUTHORIZED,
                "api_key_missing",
                "authentication_error",
                message,
            ),
            Error::Forbidden(message) => RestError::new(
                StatusCode::FORBIDDEN,
                "authorization",
                "authentication_error",
                message,
            ),
            // No REST route takes `as_of` or `after`; mapped for completeness.
            e @ Error::HistoryTruncated { .. } => RestError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "history_truncated",
                INVALID,
                e.to_string(),
            ),
            Error::Store(store) if store.is_unavailable() => {
                // Logged once by the mapping to JSON-RPC's `unavailable`.
                let rpc = jsonrpsee::types::ErrorObjectOwned::from(Error::Store(store));
                RestError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "api_error",
                    rpc.message(),
                )
            }
            Error::Config(_) | Error::Store(_) | Error::Internal(_) => {
                // The one mapping that logs internal details and words the full disk.
                let rpc = jsonrpsee::types::ErrorObjectOwned::from(e);
                RestError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "api_error",
                    rpc.message(),
                )
            }
        }
    }
}

impl axum::response::IntoResponse for RestError {
    fn into_response(self) -> axum::response::Response {
        let mut response = json_response(self.status, self.body.to_string());
        if self.should_retry_false {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

/// A JSON answer with the content type the SDKs need (rest.md §3).
pub fn json_response(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// 200 with `value`.
pub fn ok(value: &Value) -> Response<Body> {
    json_response(StatusCode::OK, value.to_string())
}

/// 204 with no body: every delete (A5).
pub fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// The router's own answers in Knock's words: a known path with the wrong method (405,
/// whose `Allow` header axum sets) gets the envelope.
pub fn finish(response: Response<Body>) -> Response<Body> {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let error = RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "invalid_request_error",
        "this path does not take this method; see the Allow header",
    );
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    Response::from_parts(parts, Body::from(error.body.to_string()))
}

/// One REST call: who makes it, its decoded path params (in route order), its query pairs
/// and its body (read only for PUT and POST).
pub struct Call {
    pub rest: Arc<Rest>,
    pub caller: Caller,
    /// Who the change log says made the changes of this call.
    pub actor: Actor,
    /// Told the JSON-RPC method the route runs as (`authorize`), for the metrics.
    pub mapped: Option<super::MethodSlot>,
    pub path: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<hyper::body::Bytes>,
    pub idempotency_key: Option<String>,
}

impl FromRequest<Arc<Rest>> for Call {
    type Rejection = RestError;

    async fn from_request(req: Request<Body>, rest: &Arc<Rest>) -> Result<Call, RestError> {
        let (mut parts, body) = req.into_parts();
        let via = parts.extensions.get::<Via>().copied().unwrap_or(Via::Tcp);
        let caller = caller(rest, via, &parts.headers)?;
        let actor = caller.actor(&Credentials::from_headers(&parts.headers));
        let mapped = parts.extensions.get::<super::MethodSlot>().cloned();
        let path = match RawPathParams::from_request_parts(&mut parts, rest).await {
            Ok(params) => params.iter().map(|(_, v)| v.to_string()).collect(),
            Err(axum::extract::rejection::RawPathParamsRejection::InvalidUtf8InPathParam(_)) => {
                return Err(RestError::invalid(
                    "path",
                    "a path segment does not percent-decode to UTF-8",
                ));
            }
            Err(_) => Vec::new(),
        };
        let query = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let idempotency_key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let reads_body = matches!(parts.method, http::Method::PUT | http::Method::POST);
        let body = if reads_body {
            let max = rest.ctx.config().settings.limits.max_request_bytes as usize;
            Some(read_body(body, max).await?)
        } else {
            None
        };
        Ok(Call {
            rest: Arc::clone(rest),
            caller,
            actor,
            mapped,
            path,
            query,
            body,
            idempotency_key,
        })
    }
}

use axum::extract::FromRequestParts as _;

/// The body, at most `max` bytes, arrived within [`BODY_READ_TIMEOUT`].
async fn read_body(body: Body, max: usize) -> Result<hyper::body::Bytes, RestError> {
    let too_large = || {
        RestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "invalid_request_error",
            format!("the request body is larger than limits.max_request_bytes ({max} bytes)"),
        )
    };
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, max).collect()).await;
    match read {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(RestError::bad_json("the request body could not be read")),
        Err(_) => Err(RestError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "invalid_request_error",
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The caller of a request (rest.md §6), or the 401 that says why there is none.
fn caller(rest: &Rest, via: Via, headers: &http::HeaderMap) -> Result<Caller, RestError> {
    let credentials = Credentials::from_headers(headers);
    let peer = match via {
        Via::Socket(peer) => {
            if let Some(denied) = rest.auth.refusal(peer) {
                return Err(RestError::auth(
                    StatusCode::UNAUTHORIZED,
                    "peer_not_allowed",
                    &denied,
                ));
            }
            Some(peer)
        }
        Via::Tcp => None,
    };
    let public_key = matches!(
        &credentials.secret_key,
        Presented::Value(key) if rest.auth.is_public_key(key)
    );
    let token = credentials.user_token != Presented::Absent;
    rest.auth.rest_caller(peer, &credentials).map_err(|denied| {
        // `auth` decides; the code says which of §7's refusals it is.
        let code = if token {
            "invalid_user_token"
        } else if public_key {
            "missing_user_token"
        } else {
            "api_key_missing"
        };
        RestError::auth(StatusCode::UNAUTHORIZED, code, &denied)
    })
}

/// The JSON-RPC methods a user token may call through REST (rest.md §6.2).
const USER_TOKEN_METHODS: [&str; 6] = [
    "users.identify",
    "users.get",
    "users.getPreferences",
    "users.listPreferences",
    "users.setPreferences",
    "users.unsetPreferences",
];

impl Call {
    /// The origin of this call's changes: its actor, through the JSON-RPC method the route
    /// maps onto (rest.md §4.1).
    pub fn origin(&self, method: &'static str) -> Origin {
        Origin::new(self.actor.clone(), method)
    }

    /// Whether the caller may make the JSON-RPC call `method` with `params` (rest.md §6.2).
    pub fn authorize(&self, method: &str, params: &Value) -> Result<(), RestError> {
        if let Some(slot) = &self.mapped {
            let _ = slot.0.set(method.to_string());
        }
        if let Caller::User(_) = &self.caller
            && !USER_TOKEN_METHODS.contains(&method)
        {
            return Err(RestError::new(
                StatusCode::FORBIDDEN,
                "incorrect_token_type",
                "authentication_error",
                "a user token may not call this route; it takes a secret key",
            ));
        }
        self.rest
            .auth
            .rest_authorize(&self.caller, method, &params.to_string())
            .map_err(|denied| RestError::auth(StatusCode::FORBIDDEN, "authorization", &denied))
    }

    /// The body as a JSON object: empty is `{}`, anything else must be a JSON object.
    pub fn body_object(&self) -> Result<Map<String, Value>, RestError> {
        let bytes = self.body.as_deref().unwrap_or_default();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => {
                // A key given twice is refused, as in JSON-RPC params (`api::strict`), not
                // read as its last value.
                let mut de = serde_json::Deserializer::from_slice(bytes);
                if let Err(e) = crate::api::strict::value(&mut de) {
                    let message = e.to_string();
                    let message = message.split(" at line ").next().unwrap_or(&message);
                    return Err(RestError::invalid("body", message));
                }
                Ok(map)
            }
            Ok(_) => Err(RestError::bad_json(
                "the request body must be a JSON object",
            )),
            Err(e) => Err(RestError::bad_json(format!(
                "the request body is not JSON: {e}"
            ))),
        }
    }

    /// The decoded path param at `i` (route order).
    pub fn param(&self, i: usize) -> String {
        self.path.get(i).cloned().unwrap_or_default()
    }

    /// The last value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of list parameter `name`, from `name[]=…` and `name=…` (rest.md §3).
    pub fn query_list(&self, name: &str) -> Vec<&str> {
        let bracketed = format!("{name}[]");
        self.query
            .iter()
            .filter(|(k, _)| *k == bracketed || k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean query parameter: `true` or `false`, anything else is 422.
    pub fn query_bool(&self, name: &str) -> Result<Option<bool>, RestError> {
        match self.query(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(RestError::invalid(name, "must be true or false")),
        }
    }

    /// `page_size` (1..=50, default 50, larger clamped: A17) as the RPC's `limit`, and the
    /// size applied, for `page_info`.
    pub fn page_size(&self) -> Result<(i64, u32), RestError> {
        const MAX: i64 = crate::api::lists::MAX_PAGE;
        match self.query("page_size") {
            None => Ok((MAX, MAX as u32)),
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n >= 1 => Ok((n, n.min(MAX) as u32)),
                _ => Err(RestError::invalid(
                    "page_size",
                    "must be a whole number from 1 to 50",
                )),
            },
        }
    }

    /// The paging params of a list (§8): `after`, `before`, `limit`; and the size applied.
    pub fn page_params(&self) -> Result<(Map<String, Value>, u32), RestError> {
        let (limit, applied) = self.page_size()?;
        let mut p = Map::new();
        p.insert("limit".into(), json!(limit));
        for name in ["after", "before"] {
            if let Some(cursor) = self.query(name).filter(|c| !c.is_empty()) {
                p.insert(name.into(), json!(cursor));
            }
        }
        Ok((p, applied))
    }

    /// Whether the caller is a user token scoped to tenants, which never reads the `default`
    /// set through the fallback (`auth::NoDefaultSet`).
    pub fn may_read_default(&self) -> bool {
        !self.caller.tenant_scoped()
    }
}

/// Parses `params` as the params of an RPC method, as JSON-RPC would: the same
/// deserialiser and field-named errors.
pub fn params<T: serde::de::DeserializeOwned>(params: &Value) -> Result<T, Error> {
    let text = params.to_string();
    crate::rpc::parse_params(&jsonrpsee::types::Params::new(Some(&text)))
}
