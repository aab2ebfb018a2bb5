//! The plain-HTTP endpoints for operators (ops.md §1–2): `GET /healthz`, `GET /readyz` and
//! `GET /metrics`, answered before JSON-RPC sees the request. One function, [`answer`],
//! that any listener's dispatch calls (the Unix socket's `rpc::http`, a TCP listener's
//! router): `None` means "not mine, go on".
//!
//! No credentials are asked for (a probe has none) and nothing is revealed beyond the
//! status and the metrics, which hold counts, never ids, properties or preferences.
//! Health answers never touch the store, so they come at once even while it is busy.

use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use serde_json::json;

use crate::api::Context;
use crate::metrics::Snapshot;

/// How long `/metrics` waits for the job counts (a store read) before leaving them out.
const JOB_COUNTS_WAIT: Duration = Duration::from_secs(1);

/// The daemon as the operators' endpoints see it.
#[derive(Clone)]
pub struct Ops(pub Arc<Context>);

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ops")
    }
}

impl Ops {
    /// The answer to an operator's request, or `None` for any other request.
    pub async fn answer(&self, method: &Method, path: &str) -> Option<Response<HttpBody>> {
        answer(&self.0, method, path).await
    }
}

async fn answer(ctx: &Arc<Context>, method: &Method, path: &str) -> Option<Response<HttpBody>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    match path {
        "/healthz" => Some(json_answer(StatusCode::OK, &json!({ "status": "ok" }))),
        "/readyz" => Some(match not_ready(ctx) {
            None => json_answer(StatusCode::OK, &json!({ "status": "ready" })),
            Some(reason) => json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "not_ready", "reason": reason }),
            ),
        }),
        "/metrics" => Some(metrics(ctx).await),
        _ => None,
    }
}

/// Why the daemon is not ready, if it is not. The store is open and migrated and the
/// config loaded before the daemon serves at all, so what is left is a shutdown.
fn not_ready(ctx: &Context) -> Option<&'static str> {
    ctx.stopping
        .is_cancelled()
        .then_some("shutting down: finishing the calls in flight")
}

async fn metrics(ctx: &Arc<Context>) -> Response<HttpBody> {
    let config = ctx.config.status();
    let database = ctx.config().settings.database.clone();
    let size = |path: &std::path::Path| std::fs::metadata(path).ok().map(|m| m.len());
    let mut wal = database.clone().into_os_string();
    wal.push("-wal");
    let jobs = tokio::time::timeout(JOB_COUNTS_WAIT, ctx.db.read(|r| r.job_counts())).await;
    let jobs = match jobs {
        Ok(Ok((queued, processing))) => vec![
            ("queued", u64::try_from(queued).unwrap_or(0)),
            ("processing", u64::try_from(processing).unwrap_or(0)),
        ],
        _ => Vec::new(),
    };
    let snapshot = Snapshot {
        cache: ctx.db.cache().stats(),
        jobs,
        config_version: config.version,
        config_reload_errors: ctx.config.reload_errors(),
        config_loaded_at: config.loaded_at.as_millisecond() as f64 / 1000.0,
        db_bytes: size(&database),
        wal_bytes: size(std::path::Path::new(&wal)),
    };
    let text = ctx.metrics.render(&snapshot);
    let mut response = Response::new(HttpBody::from(text));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response<HttpBody> {
    let mut response = Response::new(HttpBody::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
