//! `bulkOperations.subscribe` (WebSocket only): the `BulkOperation` on every progress
//! change, and once more at its terminal status, after which the subscription ends.

use std::sync::Arc;

use jsonrpsee::core::server::SubscriptionMessage;
use jsonrpsee::{PendingSubscriptionSink, RpcModule, SubscriptionCloseResponse};
use tokio::sync::broadcast::error::RecvError;

use crate::Error;
use crate::api::Context;
use crate::api::bulk::{GetParams, operation_json};
use crate::rpc::parse_params;
use crate::store::JobRow;

pub fn register(m: &mut RpcModule<Context>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    m.register_subscription(
        "bulkOperations.subscribe",
        "bulkOperations.progress",
        "bulkOperations.unsubscribe",
        |params, pending, ctx, _ext| async move { follow(params, pending, ctx).await },
    )?;
    Ok(())
}

/// Refuses a subscription with `e` (bad params, an unknown id).
pub(super) async fn reject(
    pending: PendingSubscriptionSink,
    e: Error,
) -> SubscriptionCloseResponse {
    pending
        .reject(jsonrpsee::types::ErrorObjectOwned::from(e))
        .await;
    SubscriptionCloseResponse::None
}

fn message(job: &JobRow) -> Option<SubscriptionMessage> {
    serde_json::value::to_raw_value(&operation_json(job))
        .ok()
        .map(Into::into)
}

async fn follow(
    params: jsonrpsee::types::Params<'static>,
    pending: PendingSubscriptionSink,
    ctx: Arc<Context>,
) -> SubscriptionCloseResponse {
    let p: GetParams = match parse_params(&params) {
        Ok(p) => p,
        Err(e) => return reject(pending, e).await,
    };
    // Subscribe before reading the current state, so no update falls between the two.
    let mut updates = ctx.jobs.subscribe();
    let id = p.id.clone();
    let current = match ctx.db.read(move |r| Ok::<_, Error>(r.job(&id)?)).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            let e = Error::NotFound(format!("bulk operation {:?}", p.id));
            return reject(pending, e).await;
        }
        Err(e) => return reject(pending, e).await,
    };
    let Ok(sink) = pending.accept().await else {
        return SubscriptionCloseResponse::None;
    };
    if current.status.is_terminal() {
        return message(&current).map_or(
            SubscriptionCloseResponse::None,
            SubscriptionCloseResponse::Notif,
        );
    }
    let mut last = current.processed_rows;
    if let Some(msg) = message(&current)
        && sink.send(msg).await.is_err()
    {
        return SubscriptionCloseResponse::None;
    }
    loop {
        let job = tokio::select! {
            () = sink.closed() => return SubscriptionCloseResponse::None,
            update = updates.recv() => match update {
                Ok(job) if job.id == p.id => job,
                Ok(_) => continue,
                // Fell behind: the store has the latest state.
                Err(RecvError::Lagged(_)) => {
                    let id = p.id.clone();
                    match ctx.db.read(move |r| Ok::<_, Error>(r.job(&id)?)).await {
                        Ok(Some(job)) => Arc::new(job),
                        _ => return SubscriptionCloseResponse::None,
                    }
                }
                Err(RecvError::Closed) => return SubscriptionCloseResponse::None,
            },
        };
        if job.status.is_terminal() {
            return message(&job).map_or(
                SubscriptionCloseResponse::None,
                SubscriptionCloseResponse::Notif,
            );
        }
        if job.processed_rows == last {
            continue;
        }
        last = job.processed_rows;
        if let Some(msg) = message(&job)
            && sink.send(msg).await.is_err()
        {
            return SubscriptionCloseResponse::None;
        }
    }
}
