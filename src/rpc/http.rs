//! HTTP shims around jsonrpsee's service:
//! - a body is always read as JSON, whatever its `content-type` says (rpc.md: `curl -d`
//!   works without the header; jsonrpsee alone answers 415);
//! - errors that jsonrpsee produces itself (parse error, invalid request, unknown method,
//!   body too large) get the `data.type` of rpc.md, and an oversized body becomes
//!   `limit_exceeded` (-32004), so clients see one error vocabulary.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use jsonrpsee::server::HttpBody;
use serde_json::{Value, json};

use crate::rpc::error::{LIMIT_EXCEEDED, type_of_code};

/// jsonrpsee's code for an oversized request.
const OVERSIZED_REQUEST: i64 = -32007;

#[derive(Clone, Copy, Debug)]
pub struct JsonLayer {
    pub max_request_bytes: u32,
}

impl<S> tower::Layer<S> for JsonLayer {
    type Service = JsonService<S>;
    fn layer(&self, inner: S) -> JsonService<S> {
        JsonService {
            inner,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

#[derive(Clone, Debug)]
pub struct JsonService<S> {
    inner: S,
    max_request_bytes: u32,
}

impl<S, B> tower::Service<Request<B>> for JsonService<S>
where
    S: tower::Service<Request<B>, Response = Response<HttpBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if req.method() == Method::POST {
            let is_json = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if !is_json {
                req.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        let max = self.max_request_bytes;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(patch_errors(resp, max).await)
        })
    }
}

/// Adds `data.type` to error objects that lack it. Responses without an error object
/// pass through untouched after one substring search.
async fn patch_errors(resp: Response<HttpBody>, max_request_bytes: u32) -> Response<HttpBody> {
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Response::from_parts(parts, HttpBody::from("")),
    };
    // jsonrpsee writes every error response as `"error":{"code":`.
    if !memfind(&bytes, b"\"error\":{\"code\":") {
        return Response::from_parts(parts, HttpBody::from(bytes.to_vec()));
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, HttpBody::from(bytes.to_vec()));
    };
    match &mut value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| patch_one(v, max_request_bytes)),
        one => patch_one(one, max_request_bytes),
    }
    let text = value.to_string();
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    Response::from_parts(parts, HttpBody::from(text))
}

fn patch_one(response: &mut Value, max_request_bytes: u32) {
    let Some(error) = response.get_mut("error").and_then(Value::as_object_mut) else {
        return;
    };
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    if code == OVERSIZED_REQUEST {
        let message = format!(
            "the request body is larger than limits.max_request_bytes ({max_request_bytes} bytes)"
        );
        error.insert("code".into(), json!(LIMIT_EXCEEDED));
        error.insert(
            "message".into(),
            json!(format!("limit exceeded: {message}")),
        );
        error.insert(
            "data".into(),
            json!({ "type": "limit_exceeded", "errors": [{ "field": "body", "message": message }] }),
        );
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

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
