//! The RPC middleware that keeps the wire uniform for every transport (HTTP and WebSocket):
//! - errors that jsonrpsee makes itself (an unknown method, say) get the `data.type` of
//!   rpc.md, like the errors of our own handlers;
//! - notifications (requests without an id) run, as JSON-RPC 2.0 says, and get no answer
//!   (jsonrpsee alone drops them unrun); a request whose id jsonrpsee could not read, which
//!   it passes on as a notification, is refused instead (over HTTP found in the body, alone
//!   or in a batch; over WebSocket `rpc::ws` has put a [`REFUSED`] call in its place). This
//!   layer comes before `rpc::auth`, so it sees a batch whole, and a
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
use serde_json::value::RawValue;

use crate::rpc::envelope::{IdProblem, REFUSED, Refusal, RequestBody};
use crate::rpc::error::{INTERNAL, add_type, invalid_request, oversized};

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

/// The methods of the subscriptions (`rpc::subscription`, `rpc::export`).
const SUBSCRIPTION_METHODS: [&str; 6] = [
    "bulkOperations.subscribe",
    "bulkOperations.unsubscribe",
    "changes.subscribe",
    "changes.unsubscribe",
    "daemon.export",
    "daemon.exportCancel",
];

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
        // A message `rpc::ws` refused stands here as a call; it is answered, not run.
        let refused = (req.method_name() == REFUSED).then(|| refusal(&req.params));
        async move {
            if let Some(error) = refused {
                return typed(MethodResponse::error(id.clone(), error), id);
            }
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
                    Ok(BatchEntry::Call(req)) if req.method_name() == REFUSED => {
                        rest.push(Err(BatchEntryErr::new(req.id, refusal(&req.params))));
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

/// The answer to a message `rpc::ws` refused: what its [`REFUSED`] call names.
fn refusal(params: &Option<std::borrow::Cow<'_, RawValue>>) -> ErrorObjectOwned {
    match Refusal::from_params(params.as_ref().map(|p| p.get())) {
        Some(Refusal::Id(problem)) => bad_id(problem),
        Some(Refusal::TooLarge(limit)) => oversized("the WebSocket message", limit),
        None => invalid_request(format!("invalid request: {REFUSED} is not a method"), None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::error::LIMIT_EXCEEDED;

    /// jsonrpsee's own error past 1024 subscriptions on one WebSocket comes out as rpc.md's
    /// `limit_exceeded`, not as its -32006 (`workflow_not_found`'s code) typed internal.
    #[test]
    fn too_many_subscriptions_is_limit_exceeded() {
        let error = jsonrpsee::types::error::reject_too_many_subscriptions(1024);
        let response = typed(MethodResponse::error(Id::Number(7), error), Id::Number(7));
        let answer: Value = serde_json::from_str(response.as_json().get()).expect("JSON");
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["error"]["code"], LIMIT_EXCEEDED);
        assert_eq!(answer["error"]["data"]["type"], "limit_exceeded");
        assert_eq!(
            answer["error"]["data"]["errors"][0]["field"], "subscriptions",
            "{answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("1024")),
            "{answer}"
        );
    }
}
