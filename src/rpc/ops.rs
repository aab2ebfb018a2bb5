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
        changes_head: *ctx.db.head().borrow(),
        writes: ctx.db.write_stats(),
        last_backup: ctx.backups.last(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use http::{Method, StatusCode};
    use http_body_util::BodyExt as _;

    use crate::api::Context;
    use crate::config::{Config, ConfigHandle, Durability, Overrides};
    use crate::store::Db;

    async fn get(ctx: &Arc<Context>, path: &str) -> (StatusCode, String) {
        let response = super::answer(ctx, &Method::GET, path)
            .await
            .expect("an operator's path");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Health and readiness answer at once while the store is busy (here: its writer and
    /// both readers held for two seconds), and readiness turns 503 once the daemon stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_answers_while_the_store_is_busy_and_readiness_ends_with_the_stop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("prefsd.db"), Durability::Normal).expect("open");
        let config = ConfigHandle::new(
            Config::default(),
            dir.path().to_path_buf(),
            Overrides::default(),
            None,
        )
        .expect("config");
        let ctx = Arc::new(Context::new(db.clone(), config));
        fn hold() -> Result<(), crate::Error> {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        }
        let busy = [
            tokio::spawn({
                let db = db.clone();
                async move { db.write(|_| hold()).await }
            }),
            tokio::spawn({
                let db = db.clone();
                async move { db.read(|_| hold()).await }
            }),
            tokio::spawn({
                let db = db.clone();
                async move { db.read(|_| hold()).await }
            }),
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        assert_eq!(
            get(&ctx, "/healthz").await,
            (StatusCode::OK, r#"{"status":"ok"}"#.into())
        );
        assert_eq!(
            get(&ctx, "/readyz").await,
            (StatusCode::OK, r#"{"status":"ready"}"#.into())
        );
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        ctx.stopping.cancel();
        let (status, body) = get(&ctx, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains(r#""status":"not_ready""#) && body.contains("reason"),
            "{body}"
        );
        for task in busy {
            let _ = task.await;
        }
        drop(ctx);
        db.close();
    }
}
