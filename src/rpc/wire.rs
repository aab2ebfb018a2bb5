//! The RPC middleware that keeps the wire uniform for every transport (HTTP and WebSocket):
//! - errors that jsonrpsee makes itself (an unknown method, say) get the `data.type` of
//!   rpc.md, like the errors of our own handlers;
//! - notifications (requests without an id) run, as JSON-RPC 2.0 says, and get no answer
//!   (jsonrpsee alone drops them unrun); a request whose id jsonrpsee could not read, which
//!   it passes on as a notification, is refused instead (over HTTP found in the body, alone
//!   or in a batch). This layer comes before `rpc::auth`, so it sees a batch whole, and a
//!   notification it runs is checked by `rpc::auth` as a call;
//! - every single-call response it has seen is marked [`Typed`], so the HTTP shim
//!   (`rpc::http`) passes it through without reading its body. Batch answers are left to
//!   the shim, which types errors inside them.

use std::future::Future;

use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, BatchEntryErr, MethodResponse, Notification, Request, RpcServiceT,
};
use jsonrpsee::types::{ErrorObjectOwned, Id};
use serde_json::Value;

use crate::rpc::envelope::IdProblem;
use crate::rpc::error::{INTERNAL, add_type, invalid_request};
use crate::rpc::http::RequestBody;

/// The service a middleware layer of ours wraps: jsonrpsee's RPC service with every
/// response a `MethodResponse`, shareable across tasks. Both layers (`wire`, `rpc::auth`)
/// need exactly these bounds.
pub trait Inner:
    RpcServiceT<
        MethodResponse = MethodResponse,
        BatchResponse = MethodResponse,
        NotificationResponse = MethodResponse,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Inner for S where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The methods of the one subscription (`rpc::subscription`).
const SUBSCRIPTION_METHODS: [&str; 2] = ["bulkOperations.subscribe", "bulkOperations.unsubscribe"];

/// What a subscription method called over plain HTTP is told, where jsonrpsee would answer
/// a bare internal error; `None` for any other method.
pub fn needs_websocket(method: &str) -> Option<ErrorObjectOwned> {
    SUBSCRIPTION_METHODS.contains(&method).then(|| {
        invalid_request(
            format!(
                "{method} needs a WebSocket: upgrade the connection (same socket, path /) and subscribe there"
            ),
            None,
        )
    })
}

/// A response extension: its errors already carry `data.type`.
#[derive(Clone, Copy, Debug)]
pub struct Typed;

#[derive(Clone, Copy, Debug, Default)]
pub struct WireLayer;

impl<S> tower::Layer<S> for WireLayer {
    type Service = Wire<S>;
    fn layer(&self, inner: S) -> Wire<S> {
        Wire { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Wire<S> {
    inner: S,
}

/// Adds `data.type` to an error response that lacks it, and marks the response.
fn typed(response: MethodResponse, id: Id<'static>) -> MethodResponse {
    let mut response = if response.is_error() && !has_type(&response) {
        retyped(&response, id).unwrap_or(response)
    } else {
        response
    };
    response.extensions_mut().insert(Typed);
    response
}

fn has_type(response: &MethodResponse) -> bool {
    response.as_json().get().contains("\"type\":")
}

fn retyped(response: &MethodResponse, id: Id<'static>) -> Option<MethodResponse> {
    let mut value: Value = serde_json::from_str(response.as_json().get()).ok()?;
    add_type(&mut value, 0);
    let error = value.get("error")?;
    let code = i32::try_from(error.get("code")?.as_i64()?).ok()?;
    let message = error.get("message")?.as_str()?.to_string();
    let data = error.get("data").cloned();
    let extensions = response.extensions().clone();
    Some(
        MethodResponse::error(id, ErrorObjectOwned::owned(code, message, data))
            .with_extensions(extensions),
    )
}

impl<S> RpcServiceT for Wire<S>
where
    S: Inner,
{
    type MethodResponse = MethodResponse;
    type BatchResponse = MethodResponse;
    type NotificationResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        let id = req.id.clone().into_owned();
        let websocket_error = needs_websocket(req.method_name());
        async move {
            let response = inner.call(req).await;
            // Over plain HTTP jsonrpsee refuses a subscription with a bare internal error;
            // say what is wrong instead. (In a batch the HTTP shim does the same.)
            if let Some(error) = websocket_error
                && response.as_error_code() == Some(INTERNAL)
            {
                return typed(MethodResponse::error(id.clone(), error), id);
            }
            typed(response, id)
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        async move {
            // An element whose id jsonrpsee could not read comes as a notification; over
            // HTTP the body says which (by position: jsonrpsee makes one entry per element,
            // in order, and no layer before this one drops any).
            let bad_ids = batch
                .iter()
                .find_map(|entry| match entry {
                    Ok(BatchEntry::Notification(n)) => n.extensions().get::<RequestBody>(),
                    _ => None,
                })
                .map(RequestBody::batch_id_problems)
                .unwrap_or_default();
            // Notifications run here (their answers are dropped); the rest is answered as
            // a batch.
            let mut rest = Vec::new();
            let mut notifications = Vec::new();
            for (i, entry) in batch.into_iter().enumerate() {
                match entry {
                    Ok(BatchEntry::Notification(n)) => {
                        match bad_ids.iter().find(|(at, _)| *at == i) {
                            Some((_, problem)) => {
                                rest.push(Err(BatchEntryErr::new(Id::Null, bad_id(*problem))))
                            }
                            None => notifications.push(n),
                        }
                    }
                    other => rest.push(other),
                }
            }
            let only_notifications = rest.is_empty() && !notifications.is_empty();
            for n in notifications {
                run_notification(&inner, n).await;
            }
            if only_notifications {
                return MethodResponse::notification();
            }
            // Left unmarked: the HTTP shim types errors inside batch answers.
            inner.batch(Batch::from(rest)).await
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        async move {
            let extensions = n.extensions.clone();
            // Over HTTP the body tells a request with an unreadable id from a notification;
            // the request is refused, not run unanswered. (A WebSocket message cannot be
            // told apart here: jsonrpsee keeps it to itself.)
            if let Some(problem) = extensions
                .get::<RequestBody>()
                .and_then(RequestBody::id_problem)
            {
                return typed(MethodResponse::error(Id::Null, bad_id(problem)), Id::Null);
            }
            run_notification(&inner, n).await;
            MethodResponse::notification().with_extensions(extensions)
        }
    }
}

/// The refusal of a request whose `id` cannot be read (`rpc::envelope`).
fn bad_id(problem: IdProblem) -> ErrorObjectOwned {
    let message = problem.message();
    invalid_request(
        format!("invalid request: `id` {message}; nothing was run"),
        Some(serde_json::json!([{ "field": "id", "message": message }])),
    )
}

/// Runs a notification as a call and drops its answer.
async fn run_notification<S>(inner: &S, n: Notification<'_>)
where
    S: RpcServiceT<MethodResponse = MethodResponse>,
{
    let method = n.method_name().to_string();
    let params = n.params.map(|p| p.into_owned());
    let mut req = Request::owned(method, params, Id::Null);
    req.extensions = n.extensions;
    let response = inner.call(req).await;
    if response.is_error() {
        tracing::debug!(response = response.as_json().get(), "a notification failed");
    }
}
