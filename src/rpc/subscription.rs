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

/// How long a `changes.subscribe` notification may wait for room in the connection's send
/// buffer before the subscriber counts as too slow (history.md §2).
const SLOW_SUBSCRIBER: std::time::Duration = std::time::Duration::from_secs(5);

/// Changes read per page while catching up.
const CHANGES_PAGE: u32 = 500;

/// `changes.subscribe` params.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesParams {
    pub after: Option<i64>,
}

pub fn register_changes(
    m: &mut RpcModule<Context>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    m.register_subscription(
        "changes.subscribe",
        "changes.change",
        "changes.unsubscribe",
        |params, pending, ctx, _ext| async move { follow_changes(params, pending, ctx).await },
    )?;
    Ok(())
}

/// The backlog after `after` from the log, then each change as it commits: the log is
/// read page by page from the last `seq` sent, woken by the store's head, so nothing is
/// skipped or sent twice, however the commits and wake-ups interleave.
async fn follow_changes(
    params: jsonrpsee::types::Params<'static>,
    pending: PendingSubscriptionSink,
    ctx: Arc<Context>,
) -> SubscriptionCloseResponse {
    use crate::api::history::check_after;
    use crate::store::log::ChangeFilter;
    use jsonrpsee::core::server::SendTimeoutError;

    // Watch the head before reading anything, so no commit falls between the two.
    let mut head = ctx.db.head();
    let checked = async {
        let p: ChangesParams = parse_params(&params)?;
        if p.after.is_some_and(|a| a < 0) {
            return Err(Error::invalid("after", "must be a seq, 0 or more"));
        }
        let after = p.after.unwrap_or_else(|| *head.borrow_and_update());
        let retained = ctx.db.read(|r| Ok::<_, Error>(r.log().retained()?)).await?;
        check_after(after, retained)?;
        Ok(after)
    };
    let mut after = match checked.await {
        Ok(after) => after,
        Err(e) => {
            pending
                .reject(jsonrpsee::types::ErrorObjectOwned::from(e))
                .await;
            return SubscriptionCloseResponse::None;
        }
    };
    let Ok(sink) = pending.accept().await else {
        return SubscriptionCloseResponse::None;
    };
    loop {
        // Catch up with the log.
        loop {
            let from = after;
            let page = ctx
                .db
                .read(move |r| {
                    Ok::<_, Error>(r.log().list(from, CHANGES_PAGE, &ChangeFilter::default())?)
                })
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "changes.subscribe: reading the log failed");
                    return SubscriptionCloseResponse::NotifErr(
                        "the daemon could not read its change log; resubscribe with `after`".into(),
                    );
                }
            };
            let full = page.len() == CHANGES_PAGE as usize;
            for change in page {
                let Ok(msg) = serde_json::value::to_raw_value(&change.to_json()) else {
                    continue;
                };
                match sink.send_timeout(msg, SLOW_SUBSCRIBER).await {
                    Ok(()) => after = change.seq,
                    Err(SendTimeoutError::Timeout(_)) => {
                        return SubscriptionCloseResponse::NotifErr(
                            format!(
                                "too slow: the changes could not be sent for {} s; resubscribe with after = {after}",
                                SLOW_SUBSCRIBER.as_secs()
                            )
                            .into(),
                        );
                    }
                    Err(SendTimeoutError::Closed(_)) => return SubscriptionCloseResponse::None,
                }
            }
            if !full {
                break;
            }
        }
        // Then wait for the next commit that appends.
        loop {
            tokio::select! {
                () = sink.closed() => return SubscriptionCloseResponse::None,
                () = ctx.stopping.cancelled() => return SubscriptionCloseResponse::None,
                changed = head.changed() => if changed.is_err() {
                    return SubscriptionCloseResponse::None;
                },
            }
            if *head.borrow_and_update() > after {
                break;
            }
        }
    }
}
