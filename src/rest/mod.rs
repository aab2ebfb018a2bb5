//! The Knock-compatible REST API (rest.md): `/v1/...` on the Unix socket beside JSON-RPC,
//! and on the optional TCP listener. Each route converts Knock's request to the params of a
//! JSON-RPC method, asks `auth` whether the caller may make that call, calls the same `api`
//! function as the method, and converts the answer to Knock's representation. No rule of
//! the domain lives here, only the conversions and the decisions of rest.md.
//!
//! - [`handle`] is the one entry for a request on either listener: it answers `OPTIONS`
//!   preflights, runs the router, and puts `x-request-id` and the CORS headers (§2.3) on
//!   every answer, errors included.
//! - `server::rest_hook` is the hook on the socket's HTTP stack: `/v1/...` goes to
//!   [`handle`], everything else on to JSON-RPC.
//! - `wire`: paths, queries, bodies, credentials ([`wire::Call`]), and the error envelope.
//! - `shapes`: Knock's User, Object, Tenant, PreferenceSet and Page, and the request bodies.
//! - `routes`: the route table of §4.1 and one handler per route.

mod routes;
mod shapes;
mod wire;

use std::sync::Arc;

use axum::body::Body;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower::ServiceExt as _;

use crate::api::Context;
use crate::auth::Peer;
use crate::rpc::auth::AuthLayer;

/// What the REST handlers share: the `api` context and the access check.
pub struct Rest {
    pub ctx: Arc<Context>,
    pub auth: AuthLayer,
}

/// The JSON-RPC method a REST request ran as, set when its route authorizes it: the
/// `method` label of its count in `/metrics` (`transport="rest"`).
#[derive(Clone, Debug, Default)]
pub struct MethodSlot(pub Arc<std::sync::OnceLock<String>>);

/// The outcome label of a REST answer, in the JSON-RPC errors' vocabulary (`data.type`).
fn outcome(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        200..=299 => None,
        400 | 422 => Some("invalid_params"),
        401 => Some("unauthenticated"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        405 => Some("method_not_found"),
        409 => Some("conflict"),
        408 | 413 => Some("limit_exceeded"),
        _ => Some("internal_error"),
    }
}

/// The REST API, ready to serve on either listener.
#[derive(Clone)]
pub struct App {
    rest: Arc<Rest>,
    router: axum::Router,
}

impl App {
    pub fn new(ctx: Arc<Context>, auth: AuthLayer) -> App {
        let rest = Arc::new(Rest { ctx, auth });
        App {
            router: routes::router(Arc::clone(&rest)),
            rest,
        }
    }
}

/// Which listener a request came on: the socket (with its peer) or TCP.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    Socket(Peer),
    Tcp,
}

/// Whether a request on the socket is REST's: every path under `/v1/` (rest.md §2.1).
pub fn is_rest_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

const ALLOW_METHODS: &str = "GET, PUT, POST, DELETE";
const ALLOW_HEADERS: &str =
    "accept, authorization, content-type, x-knock-user-token, x-knock-client, x-knock-branch";

/// Answers one REST request (on either listener): a preflight, or the route's answer, with
/// `x-request-id` and, for an allowed `Origin`, the CORS headers of rest.md §2.3.
pub async fn handle<B>(app: App, mut req: Request<B>, via: Via) -> Response<Body>
where
    B: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = std::time::Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let mapped = MethodSlot::default();
    let origin = allowed_origin(&app.rest, req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if req.headers().contains_key("x-knock-branch") {
        tracing::debug!(request_id, "X-Knock-Branch ignored: prefsd has no branches");
    }
    let mut response = if method == Method::OPTIONS {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        if origin.is_some() {
            let headers = response.headers_mut();
            headers.insert(
                "access-control-allow-methods",
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                "access-control-allow-headers",
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert("access-control-max-age", HeaderValue::from_static("600"));
        }
        response
    } else {
        req.extensions_mut().insert(via);
        req.extensions_mut().insert(mapped.clone());
        let req = req.map(Body::new);
        match app.router.oneshot(req).await {
            Ok(response) => wire::finish(response),
            Err(never) => match never {},
        }
    };
    if method != Method::OPTIONS {
        let called = mapped.0.get().map_or("unknown", String::as_str);
        app.rest.ctx.metrics.record_request(
            called,
            crate::metrics::Transport::Rest,
            outcome(response.status()),
            started.elapsed(),
        );
    }
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    if let Some(origin) = origin {
        headers.insert("access-control-allow-origin", origin);
        headers.append(http::header::VARY, HeaderValue::from_static("Origin"));
        if method != Method::OPTIONS {
            headers.insert(
                "access-control-expose-headers",
                HeaderValue::from_static("Retry-After"),
            );
        }
    }
    let status = response.status().as_u16();
    if status >= 500 {
        tracing::warn!(request_id, %method, path, status, "rest request failed");
    } else {
        tracing::debug!(request_id, %method, path, status, "rest request");
    }
    response
}

/// The request's `Origin` if it is one of `rest.cors.allowed_origins` (exact match).
fn allowed_origin(rest: &Rest, headers: &http::HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(http::header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let config = rest.ctx.config();
    config
        .settings
        .rest
        .allowed_origins
        .iter()
        .any(|allowed| allowed == text)
        .then(|| origin.clone())
}
