//! The RPC middleware that watches every call (ops.md §2–3): it counts it in the metrics
//! (method, transport, outcome, duration), writes one debug line per call (method,
//! duration, outcome, caller kind: never params, tokens or preference content), and names
//! the method in jsonrpsee's bare "Method not found". It sits between `rpc::wire` and
//! `rpc::auth`, so refused calls are counted too; `rpc::auth` leaves the caller's kind in
//! the response's extensions ([`CallerKind`]).
//!
//! Calls inside a batch pass here as one batch (jsonrpsee answers them itself): each is
//! counted with its method and its answer's outcome, and the whole batch's duration.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, MethodResponse, Notification, Request, RpcServiceT,
};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::Value;

use crate::metrics::{Metrics, Transport};
use crate::rpc::error::type_of_code;
use crate::rpc::wire::Inner;

/// JSON-RPC's code for an unknown method.
const METHOD_NOT_FOUND: i32 = -32601;

/// The longest method name an error message repeats.
const MAX_NAME_SHOWN: usize = 100;

/// Who made a call, as the log shows it: `server`, `user` or `refused`.
#[derive(Clone, Copy, Debug)]
pub struct CallerKind(pub &'static str);

#[derive(Clone, Debug)]
pub struct ObserveLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The `data.type` of an error response: read from the answer, or from its code when
/// jsonrpsee made it (the type is added further out, by `rpc::wire`).
fn error_type(response: &MethodResponse) -> &str {
    const KEY: &str = "\"type\":\"";
    let json = response.as_json().get();
    json.find(KEY)
        .and_then(|at| {
            let rest = &json[at + KEY.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .unwrap_or_else(|| type_of_code(response.as_error_code().map_or(0, i64::from)))
}

/// "Method not found", naming the method that was asked for.
fn method_not_found(name: &str) -> ErrorObjectOwned {
    let shown: String = name.chars().take(MAX_NAME_SHOWN).collect();
    let more = if shown.len() < name.len() { "…" } else { "" };
    ErrorObjectOwned::owned(
        METHOD_NOT_FOUND,
        format!(
            "method not found: `{shown}{more}` is not a method of prefsd; rpc.discover lists them"
        ),
        Some(serde_json::json!({
            "type": "method_not_found",
            "errors": [{ "field": "method", "message": format!("`{shown}{more}` is not a method") }],
        })),
    )
}

impl<S> RpcServiceT for Observe<S>
where
    S: Inner,
{
    type MethodResponse = MethodResponse;
    type BatchResponse = MethodResponse;
    type NotificationResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let started = Instant::now();
        let inner = self.inner.clone();
        let metrics = Arc::clone(&self.metrics);
        let method = metrics.method_label(req.method_name());
        // Kept only for an unknown method, to name it in the error.
        let unknown = (method == "unknown")
            .then(|| (req.method_name().to_string(), req.id.clone().into_owned()));
        let transport = req
            .extensions()
            .get::<Transport>()
            .copied()
            .unwrap_or(Transport::Http);
        async move {
            let mut response = inner.call(req).await;
            if let Some((name, id)) = unknown
                && response.as_error_code() == Some(METHOD_NOT_FOUND)
            {
                let extensions = response.extensions().clone();
                response =
                    MethodResponse::error(id, method_not_found(&name)).with_extensions(extensions);
            }
            let elapsed = started.elapsed();
            let outcome = response.is_error().then(|| error_type(&response));
            metrics.record_request(method, transport, outcome, elapsed);
            tracing::debug!(
                method,
                duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                outcome = outcome.unwrap_or("ok"),
                caller = response
                    .extensions()
                    .get::<CallerKind>()
                    .map_or("unknown", |k| k.0),
                "call"
            );
            response
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let started = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let transport = batch
            .extensions()
            .get::<Transport>()
            .copied()
            .unwrap_or(Transport::Http);
        let calls: Vec<(Value, &'static str)> = batch
            .iter()
            .filter_map(|entry| match entry {
                Ok(BatchEntry::Call(req)) => Some((
                    serde_json::to_value(&req.id).unwrap_or(Value::Null),
                    metrics.method_label(req.method_name()),
                )),
                _ => None,
            })
            .collect();
        let inner = self.inner.clone();
        async move {
            let response = inner.batch(batch).await;
            let elapsed = started.elapsed();
            let answers: Vec<Value> =
                serde_json::from_str(response.as_json().get()).unwrap_or_default();
            for (id, method) in calls {
                let error = answers
                    .iter()
                    .find(|a| a["id"] == id)
                    .and_then(|a| a.get("error"));
                let outcome = error.map(|e| {
                    e["data"]["type"]
                        .as_str()
                        .unwrap_or_else(|| type_of_code(e["code"].as_i64().unwrap_or(0)))
                });
                metrics.record_request(method, transport, outcome, elapsed);
            }
            response
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        self.inner.notification(n)
    }
}
